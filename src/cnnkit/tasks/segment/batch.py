"""Segmentation images to model input and logits back to each image's pixels.

An image is letterboxed as detection's are (cnnkit.tasks.detect.batch): scaled so that its
longer side is ``size`` (aspect kept; antialiased when shrinking), centred on a ``size`` x
``size`` canvas of grey 114. Its mask moves with it by nearest neighbour onto a canvas of
ignore (255), so the padding is never scored. Back: the logits of the image's window are cut
out and resized bilinearly to the image's own (h, w), where the argmax is taken, so a mask is
predicted at the resolution of the file, not of the network.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F
from torchvision.transforms.v2 import functional as TF

from cnnkit.tasks.detect.batch import PAD_VALUE, placement
from cnnkit.tasks.segment.dataset import IGNORE_INDEX


@dataclass(frozen=True)
class Window:
    """Where an (height, width) image sits on its letterbox canvas."""

    height: int  # the image's own size
    width: int
    top: int  # the scaled image's place on the canvas
    left: int
    inner_height: int
    inner_width: int


def window(height: int, width: int, size: int) -> Window:
    new_h, new_w = placement(height, width, size, "letterbox")
    return Window(height, width, (size - new_h) // 2, (size - new_w) // 2, new_h, new_w)


def letterbox(
    image: torch.Tensor, mask: torch.Tensor | None, size: int
) -> tuple[torch.Tensor, torch.Tensor | None, Window]:
    """uint8 (3, h, w) image (and its (h, w) mask) -> (3, size, size) and (size, size)."""
    height, width = (int(d) for d in image.shape[-2:])
    win = window(height, width, size)
    canvas = torch.full((3, size, size), PAD_VALUE, dtype=torch.uint8, device=image.device)
    inner = (win.inner_height, win.inner_width)
    resized = image if inner == (height, width) else TF.resize(image, list(inner), antialias=True)
    canvas[:, win.top : win.top + inner[0], win.left : win.left + inner[1]] = resized
    if mask is None:
        return canvas, None, win
    mask_canvas = torch.full((size, size), IGNORE_INDEX, dtype=mask.dtype, device=mask.device)
    moved = mask
    if inner != (height, width):
        moved = TF.resize(
            mask[None], list(inner), interpolation=TF.InterpolationMode.NEAREST_EXACT
        )[0]
    mask_canvas[win.top : win.top + inner[0], win.left : win.left + inner[1]] = moved
    return canvas, mask_canvas, win


def letterbox_batch(images: list[torch.Tensor], size: int) -> tuple[torch.Tensor, list[Window]]:
    """uint8 (B, 3, size, size) of letterboxed images, and each one's window."""
    boxed = [letterbox(image, None, size) for image in images]
    return torch.stack([b[0] for b in boxed]), [b[2] for b in boxed]


CLASS_CHUNK = 16  # classes resized at once: a (16, h, w) float map, whatever the class count


def classes_in_window(scores: torch.Tensor, win: Window) -> torch.Tensor:
    """(C, size, size) logits or probabilities of one canvas -> int64 (h, w): each pixel's best
    class at the image's own size. The image's window is resized bilinearly a few classes at a
    time, keeping a running maximum, so a large photo with many classes never needs a (C, h, w)
    map; ties go to the lower class index, as argmax gives them."""
    inner = scores[:, win.top : win.top + win.inner_height, win.left : win.left + win.inner_width]
    if (win.inner_height, win.inner_width) == (win.height, win.width):
        return inner.argmax(0)
    best = torch.full((win.height, win.width), -float("inf"))
    classes = torch.zeros((win.height, win.width), dtype=torch.int64)
    for start in range(0, inner.shape[0], CLASS_CHUNK):
        chunk = F.interpolate(
            inner[None, start : start + CLASS_CHUNK].float(),
            size=(win.height, win.width),
            mode="bilinear",
            align_corners=False,
        )[0]
        value, index = chunk.max(0)
        better = value > best
        best = torch.where(better, value, best)
        classes = torch.where(better, index + start, classes)
    return classes
