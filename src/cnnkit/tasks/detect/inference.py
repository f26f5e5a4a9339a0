"""Detections for stored images: letterbox a batch, run the detector, map boxes back.

Shared by validation, the final test, `cnnkit evaluate` and `cnnkit predict`, so every figure
and every drawn box comes from the same pass.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from cnnkit.engine.device import Precision
from cnnkit.errors import CnnkitError
from cnnkit.tasks.detect.batch import LONGER_PER_SHORTER, ResizedBatch, resize_batch
from cnnkit.tasks.detect.dataset import DetectionSet
from cnnkit.tasks.detect.postprocess import PostProcess, apply_postprocess
from cnnkit.tasks.detect.tta import check_tta, fuse_detections, mirror_boxes

# mAP ranks every detection by score, so evaluation keeps nearly all of them (as COCO's and
# Ultralytics' validation do); --conf is for what a prediction shows
EVAL_SCORE_THRESHOLD = 0.001


def configure_input(model: nn.Module, size: int, mode: str) -> None:
    """Make the detector's own resize take what resize_batch gives: a letterboxed square of
    `size` as it is, or with "shorter" a shorter side of `size` and a longer one up to
    size * 1333 / 800 (torchvision's ratio), not shrunk back into the square."""
    transform = model.model.transform
    if mode == "shorter":
        if getattr(transform, "fixed_size", None) is not None:
            raise CnnkitError("SSDlite takes a fixed square input: use --resize letterbox")
        transform.max_size = round(size * LONGER_PER_SHORTER)


@contextmanager
def evaluation_thresholds(model: nn.Module, postprocess: PostProcess) -> Iterator[None]:
    """Within: `postprocess` with the evaluation score threshold; after: `postprocess`."""
    low = min(postprocess.score_threshold, EVAL_SCORE_THRESHOLD)
    apply_postprocess(model, dataclasses.replace(postprocess, score_threshold=low))
    try:
        yield
    finally:
        apply_postprocess(model, postprocess)


@torch.no_grad()
def predict_stored(
    model: nn.Module,
    images: list[torch.Tensor],
    size: int,
    mode: str,
    precision: Precision,
    batch_size: int = 8,
    tta: str = "none",
) -> list[dict[str, torch.Tensor]]:
    """Per stored uint8 image (3, h, w): boxes (x1 y1 x2 y2 in that image's pixels, on the
    CPU), scores and 0-based labels, in eval mode. ``tta="flip"`` also runs the mirrored batch
    and fuses both passes' boxes (cnnkit.tasks.detect.tta)."""
    device = next(model.parameters()).device
    model.eval()
    check_tta(tta)
    out: list[dict[str, torch.Tensor]] = []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        batch = resize_batch(chunk, None, size, mode)
        inputs = batch.model_input(device)
        passes = [_one_pass(model, inputs, batch, precision, mirrored=False)]
        if tta == "flip":
            passes.append(_one_pass(model, inputs, batch, precision, mirrored=True))
        if len(passes) == 1:
            out += passes[0]
            continue
        pp = getattr(model, "postprocess", None) or PostProcess()
        for per_image in zip(*passes, strict=True):
            out.append(
                fuse_detections(
                    list(per_image), pp.iou_threshold, pp.max_detections, pp.score_threshold
                )
            )
    return out


def _one_pass(
    model: nn.Module,
    inputs: torch.Tensor | list[torch.Tensor],
    batch: ResizedBatch,
    precision: Precision,
    mirrored: bool,
) -> list[dict[str, torch.Tensor]]:
    """One pass over a resized batch (mirrored, or as it is); boxes in the stored images'
    pixels, on the CPU."""
    if mirrored:
        inputs = (
            inputs.flip(-1) if isinstance(inputs, torch.Tensor) else [x.flip(-1) for x in inputs]
        )
    with precision.autocast():
        found = model(inputs)
    out = []
    for i, det in enumerate(found):
        boxes = det["boxes"].float().cpu()
        if mirrored:
            boxes = mirror_boxes(boxes, int(inputs[i].shape[-1]))
        out.append(
            {
                "boxes": batch.to_stored(boxes, i),
                "scores": det["scores"].float().cpu(),
                "labels": det["labels"].cpu(),
            }
        )
    return out


def to_original(detections: list[dict[str, torch.Tensor]], data: DetectionSet) -> list[dict]:
    """Detections in stored pixels -> the original files' pixels (clipped to the image)."""
    out = []
    for i, det in enumerate(detections):
        boxes = scale_boxes(det["boxes"], *data.stored_scale(i), *data.original_sizes[i])
        area = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])  # clipping can flatten
        out.append({key: value[area] for key, value in {**det, "boxes": boxes}.items()})
    return out


def scale_boxes(boxes: torch.Tensor, sx: float, sy: float, height: int, width: int) -> torch.Tensor:
    """Boxes times (sx, sy) per axis, clipped to a (height, width) image."""
    out = boxes * torch.tensor([sx, sy, sx, sy])
    out[:, 0::2] = out[:, 0::2].clamp(0, width)
    out[:, 1::2] = out[:, 1::2].clamp(0, height)
    return out


def original_targets(data: DetectionSet) -> list:
    """The data's boxes in the original files' pixels (what mAP compares against)."""
    return [t.scaled(*data.stored_scale(i)) for i, t in enumerate(data.targets)]
