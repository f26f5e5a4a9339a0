"""Look at what the network sees: an image grid of (augmented) training images with their labels."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import NamedTuple

import torch
from PIL import Image, ImageDraw, ImageFont

from cnnkit.data.augment import AugmentConfig, BatchAugment, alternating_flips, augment_config
from cnnkit.errors import CnnkitError

_PAD = 4  # pixels between cells
_BACKGROUND = (255, 255, 255)
_TEXT = (20, 20, 20)


@functools.cache
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)  # a scalable font (Pillow >= 10.1)
    except (TypeError, OSError):
        return ImageFont.load_default()


def _fit(draw: ImageDraw.ImageDraw, text: str, size: int, width: int) -> tuple[str, object]:
    """(text, font) fitting ``width`` pixels: a smaller font first, then '...' truncation."""
    for s in range(size, 8, -1):
        font = _font(s)
        if draw.textlength(text, font=font) <= width:
            return text, font
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "...", font


def save_batch_grid(
    images: torch.Tensor,
    labels: list[str],
    path: str | os.PathLike,
    ncols: int = 8,
    upscale_to: int = 96,
) -> Path:
    """Write uint8 images (B, 3, H, W) as an image grid, each with its label under it: PNG,
    or the format the file's extension names (a name without one gets ``.png``).

    Images are enlarged with nearest-neighbour sampling so the longer side is about
    ``upscale_to`` pixels (never shrunk): 32x32 CIFAR pixels stay crisp and readable.
    """
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(
            f"images must be uint8 (B, 3, H, W), got {images.dtype} {tuple(images.shape)}"
        )
    if len(labels) != images.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {len(labels)} labels")
    if images.shape[0] == 0:
        raise ValueError("no images to show")
    b, _, h, w = images.shape
    factor = max(1, round(upscale_to / max(h, w)))
    cw, ch = w * factor, h * factor
    font_size = max(10, min(16, cw // 7))
    text_h = font_size + 6
    ncols = max(1, min(ncols, b))
    nrows = -(-b // ncols)
    grid = Image.new(
        "RGB",
        (ncols * (cw + _PAD) + _PAD, nrows * (ch + text_h + _PAD) + _PAD),
        _BACKGROUND,
    )
    draw = ImageDraw.Draw(grid)
    arrays = images.detach().cpu().permute(0, 2, 3, 1).contiguous().numpy()
    for i, (array, label) in enumerate(zip(arrays, labels, strict=True)):
        r, c = divmod(i, ncols)
        x0 = _PAD + c * (cw + _PAD)
        y0 = _PAD + r * (ch + text_h + _PAD)
        tile = Image.fromarray(array, "RGB").resize((cw, ch), Image.Resampling.NEAREST)
        grid.paste(tile, (x0, y0))
        text, font = _fit(draw, str(label), font_size, cw - 2)
        tx = x0 + (cw - draw.textlength(text, font=font)) / 2
        draw.text((tx, y0 + ch + 2), text, fill=_TEXT, font=font)
    path, image_format = image_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path, format=image_format)
    return path


def image_path(path: str | os.PathLike) -> tuple[Path, str]:
    """(path, Pillow format) for an image to write: its extension's format (.png, .jpg, .webp,
    ...), and .png added to a name without one; a name Pillow cannot write is refused."""
    path = Path(path)
    if not path.suffix:
        path = path.with_name(path.name + ".png")
    Image.init()  # registers every plugin, so SAVE lists all writable formats
    image_format = Image.registered_extensions().get(path.suffix.lower())
    if image_format not in Image.SAVE:
        raise CnnkitError(f"cannot write an image named {path.name}: name it .png or .jpg")
    return path, image_format


def _weight(w: float) -> str:
    return f"{w:.2f}".removeprefix("0")  # .70, 1.00


def target_labels(targets: torch.Tensor, classes: list[str]) -> list[str]:
    """Class names for hard targets; "cat .70/dog .30" (top two) for soft ones."""
    if targets.dim() == 1:
        return [classes[i] for i in targets.tolist()]
    out = []
    weights, idx = targets.float().cpu().topk(min(2, targets.shape[1]), dim=1)
    for ws, ks in zip(weights.tolist(), idx.tolist(), strict=True):
        parts = [f"{classes[k]} {_weight(wt)}" for wt, k in zip(ws, ks, strict=True) if wt >= 0.005]
        out.append("/".join(parts))
    return out


class ShownBatch(NamedTuple):
    """What `show_batch` wrote: the grid's path, how many images it holds, the augmentation."""

    path: Path
    count: int
    augmentation: AugmentConfig


def show_batch(
    data_spec: str,
    augment: str = "standard",
    n: int = 32,
    out: str | os.PathLike = "batch.png",
    seed: int = 0,
    data_root: str | os.PathLike | None = None,
    **overrides,
) -> ShownBatch:
    """Write a grid of ``n`` seeded-random training images after the ``augment`` preset (all
    of them when there are fewer).

    ``overrides`` change single fields of the preset (``rotation=30``, ``mixup=0.4``, ...).
    """
    from cnnkit.data.datasets import load_data

    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise CnnkitError(f"the number of images to show must be at least 1, got {n!r}")
    image_path(out)  # a name it cannot write is refused before the data is decoded
    cfg = augment_config(augment, **overrides)
    data = load_data(
        data_spec, data_root=data_root, val_split=0.0, splits=("train",), progress=False
    )
    train = data.train
    if train is None or len(train) == 0:
        raise CnnkitError(f"{data_spec} has no training images")
    images, targets = augmented_sample(train.images, train.labels, cfg, n, seed, len(data.classes))
    path = save_batch_grid(images, target_labels(targets, data.classes), out)
    return ShownBatch(path, images.shape[0], cfg)


def augmented_sample(
    images: torch.Tensor,
    labels: torch.Tensor,
    cfg: AugmentConfig,
    n: int,
    seed: int,
    num_classes: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` seeded-random images of a training set as the first epoch augments them (an
    alternating flip mirrors the images that a run with this seed mirrors in epoch 0)."""
    g = torch.Generator().manual_seed(int(seed))
    idx = torch.randperm(len(images), generator=g)[: max(1, int(n))]
    flip = alternating_flips(len(images), seed, 0)[idx] if cfg.alternating_flip else None
    return BatchAugment(cfg, num_classes)(images[idx], labels[idx], g, flip)
