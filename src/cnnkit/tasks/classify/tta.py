"""Test-time augmentation (TTA): predict on a few transformed copies of each image, average.

The views follow airbench (KellerJordan/cifar10-airbench, ``infer_mirror_translate``):

- "none": the image.
- "flip": the image and its left-right mirror, averaged with equal weights.
- "flip-translate": those two (weight 1/4 each) plus the image shifted by (+t, +t) and by
  (-t, -t) pixels and the mirrors of both (1/8 each): six views. Shifts fill the uncovered
  border by reflection (``F.pad(..., "reflect")`` then crop, as airbench does), never by wrapping
  around. airbench shifts by 1 pixel at test time (it trains with 2-pixel translations), so
  ``translate`` defaults to 1. Shifts are in stored pixels, before any resize in ``prepare``.

Logits are averaged, not probabilities, as airbench does: the result is still a logit vector that
cnnkit's loss, metrics and softmax take unchanged (softmax of averaged logits is the normalised
geometric mean of the views' probabilities), and it is linear in the model's outputs, so "none"
is exactly the plain prediction. For accuracy the two choices differ very little.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from cnnkit.data.augment import reflect_index
from cnnkit.engine.device import Precision
from cnnkit.errors import CnnkitError, did_you_mean
from cnnkit.tasks.classify.loop import Prepare, predict_logits

TTA_MODES = ("none", "flip", "flip-translate")
DEFAULT_TRANSLATE = 1  # pixels; airbench's test-time shift

_WEIGHTS = {
    "none": (1.0,),
    "flip": (0.5, 0.5),
    "flip-translate": (0.25, 0.25, 0.125, 0.125, 0.125, 0.125),
}


def check_mode(mode: str) -> str:
    """`mode` if it is a TTA mode, else a CnnkitError suggesting the closest one."""
    if mode not in TTA_MODES:
        raise did_you_mean("tta mode", str(mode), TTA_MODES)
    return mode


def tta_weights(mode: str) -> tuple[float, ...]:
    """The weight of each view of `tta_views(..., mode)`, in order; they sum to 1."""
    return _WEIGHTS[check_mode(mode)]


def hflip(images: torch.Tensor) -> torch.Tensor:
    """Left-right mirror of (N, C, H, W) images."""
    return images.flip(-1)


def shift(images: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Move the content of (N, C, H, W) images down by `dy` and right by `dx` pixels (negative:
    up/left); the uncovered border is the image's reflection, like F.pad(mode="reflect") + crop.

    Done with index gathering, so any dtype (uint8 included) on any device works.
    """
    height, width = images.shape[-2:]
    if abs(dy) >= height or abs(dx) >= width:
        raise CnnkitError(f"cannot shift {height}x{width} images by ({dy}, {dx}) pixels")
    rows = reflect_index(torch.arange(height, device=images.device) - dy, height)
    cols = reflect_index(torch.arange(width, device=images.device) - dx, width)
    return images.index_select(-2, rows).index_select(-1, cols)


def _iter_views(images: torch.Tensor, mode: str, translate: int) -> Iterator[torch.Tensor]:
    yield images
    if mode == "none":
        return
    yield hflip(images)
    if mode == "flip":
        return
    for t in (translate, -translate):
        moved = shift(images, t, t)
        yield moved
        yield hflip(moved)


def tta_views(
    images: torch.Tensor, mode: str, translate: int = DEFAULT_TRANSLATE
) -> list[torch.Tensor]:
    """Views of a batch (N, C, H, W) for `mode`, each with the input's shape, dtype and device:
    "none": [x]; "flip": [x, flip(x)]; "flip-translate": [x, flip(x), s, flip(s), s', flip(s')]
    with s = x shifted by (+t, +t), s' by (-t, -t); weights in tta_weights(mode)."""
    check_mode(mode)
    if images.ndim != 4:
        raise ValueError(f"TTA needs images (N, C, H, W), got shape {tuple(images.shape)}")
    if translate < 0:
        raise CnnkitError(f"TTA translate must be >= 0 pixels, not {translate}")
    return list(_iter_views(images, mode, translate))


def tta_logits(
    model: nn.Module,
    images: torch.Tensor,
    prepare: Prepare,
    precision: Precision,
    batch_size: int = 256,
    mode: str = "flip",
    translate: int = DEFAULT_TRANSLATE,
) -> torch.Tensor:
    """Weighted mean of the logits over the TTA views of `mode`: float32 (N, C) on the CPU."""
    return tta_and_plain_logits(model, images, prepare, precision, batch_size, mode, translate)[0]


@torch.no_grad()
def tta_and_plain_logits(
    model: nn.Module,
    images: torch.Tensor,
    prepare: Prepare,
    precision: Precision,
    batch_size: int = 256,
    mode: str = "flip",
    translate: int = DEFAULT_TRANSLATE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(TTA logits, plain logits), both float32 (N, C) on the CPU, from one pass: the plain
    logits are those of the identity view, so reporting the TTA gain costs no extra inference.

    Works a batch at a time: each view of a batch is made on the model's device, goes through
    loop.predict_logits and is dropped, so memory stays that of one extra batch.
    """
    weights = tta_weights(mode)
    if translate < 0:
        raise CnnkitError(f"TTA translate must be >= 0 pixels, not {translate}")
    if len(images) == 0:
        empty = predict_logits(model, images, prepare, precision, batch_size)
        return empty, empty.clone()
    if images.ndim != 4:
        raise ValueError(f"TTA needs images (N, C, H, W), got shape {tuple(images.shape)}")
    device = next(model.parameters()).device
    averaged, plain = [], []
    for i in range(0, len(images), batch_size):
        views = _iter_views(images[i : i + batch_size].to(device), mode, translate)
        first = predict_logits(model, next(views), prepare, precision, batch_size)
        plain.append(first)
        total = first * weights[0]
        for weight, view in zip(weights[1:], views, strict=True):
            logits = predict_logits(model, view, prepare, precision, batch_size)
            total.add_(logits, alpha=weight)
        averaged.append(total)
    return torch.cat(averaged), torch.cat(plain)
