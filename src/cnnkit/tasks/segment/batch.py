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


CLASS_CHUNK = 16  # classes resized at once
BAND_VALUES = 1 << 24  # floats resized at once (64 MB): a large photo is done in bands of rows


def classes_in_window(
    scores: torch.Tensor, win: Window, band_values: int = BAND_VALUES
) -> torch.Tensor:
    """(C, size, size) logits or probabilities of one canvas -> int64 (h, w): each pixel's best
    class at the image's own size (bilinear, as F.interpolate with align_corners=False; ties
    go to the lower class index, as argmax gives them).

    The image's window is resized a few classes at a time, keeping a running maximum, so many
    classes never need a (C, h, w) map. When even that is over ``band_values`` floats (an
    8 MP photo with two classes, a 1 MP one with 16) the resize goes a band of rows at a
    time, so a 40 MP photo costs 0.1-0.3 GB besides its 0.3 GB mask rather than 1.5-4 GB
    (bench/segment_resize_memory.py). A band
    computes the same bilinear weights in its own arithmetic, so a pixel whose two best
    classes are within float rounding (about 1e-7) of each other may fall the other way."""
    inner = scores[:, win.top : win.top + win.inner_height, win.left : win.left + win.inner_width]
    height, width = win.height, win.width
    if (win.inner_height, win.inner_width) == (height, width):
        return inner.max(0).indices  # max(0), not argmax(0): 9x faster over (C, h, w)
    inner = inner.float()
    chunk = min(inner.shape[0], CLASS_CHUNK)
    if chunk * height * width <= band_values:
        return _best_class(inner, lambda part: _resized(part, height, width))
    rows = max(1, band_values // (chunk * width))
    classes = torch.empty((height, width), dtype=torch.int64)
    for top in range(0, height, rows):
        bottom = min(height, top + rows)
        classes[top:bottom] = _best_class(
            inner, lambda part, t=top, b=bottom: _resized_rows(part, height, width, t, b)
        )
    return classes


def _resized(part: torch.Tensor, height: int, width: int) -> torch.Tensor:
    size = (height, width)
    return F.interpolate(part[None], size=size, mode="bilinear", align_corners=False)[0]


def _resized_rows(part: torch.Tensor, height: int, width: int, top: int, bottom: int):
    """Rows top:bottom of _resized(part, height, width): the width resized by F.interpolate on
    the source rows they need, then the two nearest rows blended with F.interpolate's weights
    (source row (r + 0.5) * in / out - 0.5, clamped at 0)."""
    source_rows = part.shape[1]
    scale = torch.tensor(source_rows, dtype=torch.float32) / height
    y = ((torch.arange(top, bottom, dtype=torch.float32) + 0.5) * scale - 0.5).clamp(min=0)
    y0 = y.floor().long().clamp(max=source_rows - 1)
    y1 = (y0 + 1).clamp(max=source_rows - 1)
    low = (y - y0).clamp(0, 1)[:, None]
    first, last = int(y0[0]), int(y1[-1])
    wide = _resized(part[:, first : last + 1], last + 1 - first, width)
    return torch.lerp(wide[:, y0 - first], wide[:, y1 - first], low)


def _best_class(inner: torch.Tensor, resize) -> torch.Tensor:
    """Argmax over the classes of resize(a chunk of inner's classes), chunk by chunk."""
    if inner.shape[0] <= CLASS_CHUNK:
        return resize(inner).max(0).indices
    best = classes = None
    for start in range(0, inner.shape[0], CLASS_CHUNK):
        value, index = resize(inner[start : start + CLASS_CHUNK]).max(0)
        if best is None:
            best, classes = value, index
            continue
        better = value > best
        best = torch.where(better, value, best)
        classes = torch.where(better, index + start, classes)
    return classes
