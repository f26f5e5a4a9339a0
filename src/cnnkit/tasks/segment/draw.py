"""Masks drawn: class colours (Pascal VOC's palette), overlays on the photo
(torchvision.utils.draw_segmentation_masks), class-index PNGs, and the evaluation gallery of
image / truth / prediction."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image
from torchvision.utils import draw_segmentation_masks, make_grid

from cnnkit.tasks.detect.draw import letterbox_tile, save_png
from cnnkit.tasks.segment.dataset import IGNORE_INDEX
from cnnkit.tasks.segment.formats.voc import voc_palette

IGNORED = (255, 255, 255)  # how ignored pixels look in a drawn truth mask
OVERLAY_ALPHA = 0.5


def class_colours(num_classes: int) -> list[tuple[int, int, int]]:
    """One colour per class (VOC's palette; class 0, the background, is black)."""
    palette = voc_palette(max(num_classes, 1))
    return [tuple(int(v) for v in palette[c]) for c in range(num_classes)]


def colour_mask(mask: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(h, w) class indices -> uint8 (3, h, w) in the class colours (ignore in white)."""
    table = torch.tensor([*class_colours(num_classes), IGNORED], dtype=torch.uint8)
    index = mask.long().clone()
    index[(index < 0) | (index >= num_classes)] = num_classes  # ignore (or no class): white
    return table[index].permute(2, 0, 1).contiguous()


def overlay(image: torch.Tensor, mask: torch.Tensor, num_classes: int) -> torch.Tensor:
    """uint8 (3, h, w): the image with every class but the background (0) tinted in."""
    layers = torch.stack([mask == c for c in range(1, num_classes)]) if num_classes > 1 else None
    if layers is None or not layers.any():
        return image.clone()
    colours = class_colours(num_classes)[1:]
    return draw_segmentation_masks(image, layers, alpha=OVERLAY_ALPHA, colors=colours)


def save_class_png(
    mask: torch.Tensor | np.ndarray, path: Path | BinaryIO, num_classes: int
) -> Path | BinaryIO:
    """A class-index PNG: each pixel its class (0..C-1), with the palette embedded, so image
    viewers show colours and every reader gets the indices back (Pascal VOC's format). More
    than 256 classes cannot be one byte: such masks are written as 16-bit greyscale."""
    array = mask.numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    if num_classes > 256:
        Image.fromarray(array.astype(np.uint16)).save(path, format="PNG")
        return path
    png = Image.fromarray(array.astype(np.uint8), mode="P")
    png.putpalette(voc_palette(256).reshape(-1).tolist())
    png.save(path, format="PNG")
    return path


def gallery(
    images: Sequence[torch.Tensor],
    truths: Sequence[torch.Tensor],
    predictions: Sequence[torch.Tensor],
    num_classes: int,
    path: Path,
    tile: int = 256,
) -> Path:
    """Rows of image | true mask over it | predicted mask over it, each tile letterboxed."""
    tiles = []
    for image, truth, predicted in zip(images, truths, predictions, strict=True):
        shown_truth = truth.clone().long()
        shown_truth[shown_truth == IGNORE_INDEX] = 0
        tiles += [
            letterbox_tile(image, tile),
            letterbox_tile(overlay(image, shown_truth, num_classes), tile),
            letterbox_tile(overlay(image, predicted.long(), num_classes), tile),
        ]
    grid = make_grid(tiles, nrow=3, padding=4, pad_value=255)
    return save_png(grid, path)
