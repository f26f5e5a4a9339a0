"""Resize a list of detection images to model input and map predicted boxes back.

``letterbox``: each image is scaled so that its longer side is ``size`` (aspect kept), centred
and padded with grey 114 (as YOLO does) to ``size`` x ``size``; one uint8 (B, 3, size, size)
tensor. ``shorter``: the shorter side becomes ``size`` unless that would make the longer side
exceed ``size * 1333 / 800`` (torchvision's Faster R-CNN rule), no padding; a list of images.
Downscaling is antialiased. Boxes move with the pixels, and each image's (scale, padding) is
kept so predictions can go back to the stored image and on to the original file's pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.transforms.v2 import functional as F

from cnnkit.tasks.detect.dataset import BoxTarget

PAD_VALUE = 114
MODES = ("letterbox", "shorter")
LONGER_PER_SHORTER = 1333 / 800  # torchvision's GeneralizedRCNNTransform (min 800, max 1333)


@dataclass
class ResizedBatch:
    """Resized images, their moved boxes, and how each image was placed."""

    images: torch.Tensor | list[torch.Tensor]  # letterbox: (B, 3, size, size); shorter: a list
    targets: list[BoxTarget] | None
    scales: list[tuple[float, float]]  # (sx, sy): batch pixels per stored pixel, per axis
    pads: list[tuple[int, int]]  # (pad_x, pad_y): offset of the image's top-left corner
    stored_sizes: list[tuple[int, int]]  # (H, W) of each input image
    original_sizes: list[tuple[int, int]] | None = None  # (H, W) on disk, when given

    def model_input(self, device: torch.device) -> torch.Tensor | list[torch.Tensor]:
        """The images on `device`, still uint8 (the detector scales and normalises them)."""
        if isinstance(self.images, torch.Tensor):
            return self.images.to(device)
        return [image.to(device) for image in self.images]

    def to_stored(self, boxes: torch.Tensor, i: int) -> torch.Tensor:
        """Boxes (K, 4) in batch pixels of image i -> that input image's pixels, clipped."""
        sx, sy = self.scales[i]
        px, py = self.pads[i]
        offset = boxes.new_tensor([px, py, px, py])
        factor = boxes.new_tensor([sx, sy, sx, sy])
        height, width = self.stored_sizes[i]
        return _clip((boxes - offset) / factor, height, width)

    def to_original(self, boxes: torch.Tensor, i: int) -> torch.Tensor:
        """Boxes (K, 4) in batch pixels of image i -> the original file's pixels (through the
        stored size to ``original_sizes``; the stored image's when none were given), clipped."""
        stored = self.to_stored(boxes, i)
        if self.original_sizes is None:
            return stored
        (sh, sw), (oh, ow) = self.stored_sizes[i], self.original_sizes[i]
        factor = stored.new_tensor([ow / sw, oh / sh, ow / sw, oh / sh])
        return _clip(stored * factor, oh, ow)


def _clip(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    out = boxes.clone()
    out[..., 0::2] = out[..., 0::2].clamp(0, width)
    out[..., 1::2] = out[..., 1::2].clamp(0, height)
    return out


def _resize(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    if tuple(image.shape[-2:]) == (height, width):
        return image
    return F.resize(image, [height, width], antialias=True)


def placement(height: int, width: int, size: int, mode: str) -> tuple[int, int]:
    """(new H, new W) of an (height, width) image under a mode."""
    if mode == "letterbox":
        scale = size / max(height, width)
        return min(size, max(1, round(height * scale))), min(size, max(1, round(width * scale)))
    scale = min(size / min(height, width), size * LONGER_PER_SHORTER / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize_batch(
    images: list[torch.Tensor],
    targets: list[BoxTarget] | None,
    size: int,
    mode: str = "letterbox",
    original_sizes: list[tuple[int, int]] | None = None,
) -> ResizedBatch:
    """Resize uint8 (3, h, w) images (and their boxes) to model input by ``mode``."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if targets is not None and len(targets) != len(images):
        raise ValueError("targets must have one entry per image")
    if original_sizes is not None and len(original_sizes) != len(images):
        raise ValueError("original_sizes must have one entry per image")
    out: list[torch.Tensor] = []
    moved: list[BoxTarget] = []
    scales, pads, stored = [], [], []
    for i, image in enumerate(images):
        height, width = image.shape[-2:]
        new_h, new_w = placement(height, width, size, mode)
        sx, sy = new_w / width, new_h / height
        px, py = ((size - new_w) // 2, (size - new_h) // 2) if mode == "letterbox" else (0, 0)
        out.append(_resize(image, new_h, new_w))
        scales.append((sx, sy))
        pads.append((px, py))
        stored.append((int(height), int(width)))
        if targets is not None:
            t = targets[i].scaled(sx, sy)
            t.boxes += torch.tensor([px, py, px, py], dtype=torch.float32)
            moved.append(t)
    batch: torch.Tensor | list[torch.Tensor] = out
    if mode == "letterbox":
        device = images[0].device if images else None
        canvas = torch.full((len(out), 3, size, size), PAD_VALUE, dtype=torch.uint8, device=device)
        for i, resized in enumerate(out):
            (px, py), (h, w) = pads[i], resized.shape[-2:]
            canvas[i, :, py : py + h, px : px + w] = resized
        batch = canvas
    return ResizedBatch(
        batch,
        moved if targets is not None else None,
        scales,
        pads,
        stored,
        list(original_sizes) if original_sizes is not None else None,
    )
