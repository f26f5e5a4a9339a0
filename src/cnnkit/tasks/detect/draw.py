"""Boxes drawn on images (torchvision.utils.draw_bounding_boxes): predictions, ground truth,
and the evaluation gallery of both."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.utils import draw_bounding_boxes, make_grid

PREDICTED = (255, 64, 32)
TRUE = (32, 200, 64)


def _chw(image: np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(image, np.ndarray):
        return torch.from_numpy(np.require(image, requirements=["C", "W"])).permute(2, 0, 1)
    return image


def draw_boxes(
    image: np.ndarray | torch.Tensor,
    boxes: torch.Tensor,
    labels: Sequence[str] | None = None,
    color: tuple[int, int, int] = PREDICTED,
) -> torch.Tensor:
    """uint8 (3, H, W) with the boxes (x1 y1 x2 y2, pixels) outlined and labelled."""
    chw = _chw(image)
    if len(boxes) == 0:
        return chw.clone()
    width = max(1, round(max(chw.shape[1:]) / 250))
    return draw_bounding_boxes(
        chw, boxes.float(), labels=list(labels) if labels else None, colors=color, width=width
    )


def save_png(image: torch.Tensor, path: Path) -> Path:
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(path)
    return path


def draw_detections(image: np.ndarray, detections: Sequence[Any], path: Path) -> Path:
    """One image with its detections (objects with .box, .label, .score) written as PNG."""
    boxes = torch.tensor([d.box for d in detections], dtype=torch.float32).reshape(-1, 4)
    labels = [f"{d.label} {d.score:.2f}" for d in detections]
    return save_png(draw_boxes(image, boxes, labels), path)


def gallery(
    images: Sequence[torch.Tensor],
    predictions: Sequence[dict[str, torch.Tensor]],
    targets: Sequence[Any],
    classes: Sequence[str],
    path: Path,
    tile: int = 320,
    conf: float = 0.25,
) -> Path:
    """A grid of images, each with its true boxes (green) and predicted ones over `conf` (red,
    labelled with class and score); every tile letterboxed to `tile` pixels."""
    tiles = []
    for image, pred, target in zip(images, predictions, targets, strict=True):
        shown = pred["scores"] >= conf
        names = [
            f"{classes[int(c)]} {float(s):.2f}"
            for c, s in zip(pred["labels"][shown], pred["scores"][shown], strict=True)
        ]
        drawn = draw_boxes(image, target.boxes, None, TRUE)
        drawn = draw_boxes(drawn, pred["boxes"][shown], names, PREDICTED)
        tiles.append(letterbox_tile(drawn, tile))
    grid = make_grid(tiles, nrow=min(4, len(tiles)), padding=4, pad_value=255)
    return save_png(grid, path)


def letterbox_tile(image: torch.Tensor, size: int) -> torch.Tensor:
    height, width = image.shape[1:]
    scale = size / max(height, width)
    new = (max(1, round(height * scale)), max(1, round(width * scale)))
    resized = torch.nn.functional.interpolate(
        image[None].float(), size=new, mode="bilinear", antialias=True, align_corners=False
    )[0]
    canvas = torch.full((3, size, size), 255.0)
    canvas[:, : new[0], : new[1]] = resized
    return canvas.round().clamp(0, 255).to(torch.uint8)
