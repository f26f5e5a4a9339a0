"""Post-processing of detections: score threshold, class-aware NMS, detections per image.

``PostProcess`` is stored in a checkpoint and set on any of the four torchvision architectures
with ``apply_postprocess`` (FCOS/RetinaNet/SSD: ``score_thresh``, ``nms_thresh``,
``detections_per_img``; Faster R-CNN: the same on ``roi_heads``), so ``--conf``/``--iou`` change
it at prediction time. The heads themselves run torchvision's class-aware ``batched_nms``;
``nms``/``filter_detections`` do the same for detections from elsewhere (e.g. merged TTA runs).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torchvision.ops import batched_nms

from cnnkit.errors import CnnkitError


@dataclass
class PostProcess:
    """Keep detections scoring above ``score_threshold`` (as torchvision's heads do); NMS at
    ``iou_threshold`` per class; at most ``max_detections`` per image, best first."""

    score_threshold: float = 0.05
    iou_threshold: float = 0.5
    max_detections: int = 100

    def __post_init__(self) -> None:
        self.score_threshold = _fraction("score threshold (--conf)", self.score_threshold, 0.0)
        self.iou_threshold = _fraction("IoU threshold (--iou)", self.iou_threshold, 1e-9)
        value = self.max_detections
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise CnnkitError(f"max detections must be a positive integer, got {value!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PostProcess:
        unknown = set(d) - {"score_threshold", "iou_threshold", "max_detections"}
        if unknown:
            raise CnnkitError(f"unknown post-processing keys: {', '.join(sorted(unknown))}")
        return cls(**d)


def _fraction(what: str, value: object, low: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= 1:
        bounds = "from 0 to 1" if low == 0 else "above 0 and at most 1"
        raise CnnkitError(f"{what} must be a number {bounds}, got {value!r}")
    return float(value)


def apply_postprocess(model: nn.Module, pp: PostProcess) -> None:
    """Set ``pp`` on a detector (cnnkit's wrapper or torchvision's FCOS/RetinaNet/SSD/Faster
    R-CNN); it takes effect on the next eval-mode forward."""
    inner = getattr(model, "model", model)  # cnnkit's DetectionModel wraps the torchvision model
    target = getattr(inner, "roi_heads", inner)  # Faster R-CNN keeps them on its box head
    if not all(hasattr(target, a) for a in ("score_thresh", "nms_thresh", "detections_per_img")):
        raise TypeError(f"{type(inner).__name__} is not a torchvision detector")
    target.score_thresh = pp.score_threshold
    target.nms_thresh = pp.iou_threshold
    target.detections_per_img = pp.max_detections
    if hasattr(model, "postprocess") and model is not inner:
        model.postprocess = PostProcess.from_dict(pp.to_dict())


def nms(
    boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """Indices of the boxes kept by class-aware NMS (boxes of different labels never suppress
    each other), highest score first."""
    if len(boxes) == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    return batched_nms(boxes.float(), scores.float(), labels, float(iou_threshold))


def filter_detections(detections: dict[str, torch.Tensor], pp: PostProcess) -> dict:
    """One image's detections (boxes, scores, labels) after ``pp``: threshold, NMS, top k."""
    boxes, scores, labels = detections["boxes"], detections["scores"], detections["labels"]
    keep = torch.nonzero(scores > pp.score_threshold).flatten()
    kept = nms(boxes[keep], scores[keep], labels[keep], pp.iou_threshold)
    keep = keep[kept][: pp.max_detections]
    return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}
