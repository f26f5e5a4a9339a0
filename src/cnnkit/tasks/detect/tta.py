"""Test-time augmentation for detectors: the batch as it is and mirrored, each pass's detections
mapped back to the stored image, then fused.

Fusion is weighted box fusion (Solovyev et al. 2021) in its matrix form, as YOLOv5's merge-NMS
writes it: class-aware NMS over every pass's boxes picks one box per object, and each kept box
becomes the score-weighted mean of the boxes of its class that overlap it by more than the NMS
threshold, from every pass. Averaging two independent estimates of an edge is what tightens the
boxes. Each box joins one cluster only (the kept box of its class it overlaps most). A fused box's
score is the mean over the passes of its best score in its cluster, so an object only one pass
found ranks below one both found. Written here because the PyPI package `ensemble-boxes` pulls in
pandas and numba for these few lines.
"""

from __future__ import annotations

import torch
from torchvision.ops import batched_nms, box_iou

from cnnkit.errors import CnnkitError

TTA_MODES = ("none", "flip")  # detectors' and segmenters' (classifiers have more)


def check_tta(tta: str, task: str = "detection") -> str:
    """`tta`, or one line naming the choices (``task``: the word the line starts with)."""
    if tta not in TTA_MODES:
        raise CnnkitError(f"{task} test-time augmentation is none or flip, not '{tta}'")
    return tta


def mirror_boxes(boxes: torch.Tensor, width: int) -> torch.Tensor:
    """x1 y1 x2 y2 boxes found in a mirrored image of ``width`` px -> the unmirrored image's."""
    out = boxes.clone()
    out[:, 0] = width - boxes[:, 2]
    out[:, 2] = width - boxes[:, 0]
    return out


def fuse_detections(
    passes: list[dict[str, torch.Tensor]],
    iou_threshold: float,
    max_detections: int,
    score_threshold: float = 0.0,
) -> dict[str, torch.Tensor]:
    """One image's detections from several passes (boxes in the same pixels) -> one set, the
    fused scores above ``score_threshold`` (each pass kept its own boxes above it, so a box one
    pass alone found may fall below it once averaged)."""
    boxes = torch.cat([p["boxes"].float() for p in passes])
    scores = torch.cat([p["scores"].float() for p in passes])
    labels = torch.cat([p["labels"] for p in passes])
    source = torch.cat(
        [torch.full((len(p["boxes"]),), k, device=boxes.device) for k, p in enumerate(passes)]
    )
    if len(boxes) == 0:
        return {"boxes": boxes.reshape(0, 4), "scores": scores, "labels": labels}
    keep = batched_nms(boxes, scores, labels, float(iou_threshold))
    overlap = box_iou(boxes[keep], boxes) * (labels[keep, None] == labels)
    # each box joins one cluster, the kept box of its class it overlaps most: a box between two
    # people must not lend its score to both
    closest = overlap.argmax(0)
    rows = torch.arange(len(keep), device=boxes.device)
    members = (overlap > iou_threshold) & (closest[None] == rows[:, None])
    members[rows, keep] = True  # a kept box is its own cluster's (even a zero-area one)
    weights = members * scores
    fused = (weights @ boxes) / weights.sum(1, keepdim=True).clamp_min(1e-12)
    best_per_pass = torch.stack(
        [(weights * (source == k)).amax(1) for k in range(len(passes))], dim=1
    )
    fused_scores = best_per_pass.mean(1)
    order = fused_scores.argsort(descending=True, stable=True)
    order = order[fused_scores[order] > score_threshold][:max_detections]
    return {"boxes": fused[order], "scores": fused_scores[order], "labels": labels[keep][order]}
