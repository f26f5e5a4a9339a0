"""Detectors in an exportable form: every anchor's decoded box and class scores, no NMS.

torchvision's detectors end in data-dependent steps (score threshold, per-level top-k,
class-aware NMS) that neither torch.export nor the ONNX exporter can trace with a dynamic batch.
So the exported graph stops before them, as Ultralytics' and most runtimes' detectors do: it
gives ``boxes`` (B, A, 4) x1 y1 x2 y2 in input pixels, decoded and clipped, and ``scores``
(B, A, C) for cnnkit's 0-based classes. ``select`` then applies the same threshold, top-k and
``batched_nms`` as torchvision's ``postprocess_detections``, so an exported detector finds the
boxes the checkpoint does. The anchors of the fixed square input are constants of the graph.

FCOS and RetinaNet rank candidates per pyramid level; SSD per class. Faster R-CNN's second
stage needs its proposals' NMS inside the network and is not exported.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.detection import FCOS, RetinaNet
from torchvision.models.detection.ssd import SSD

from cnnkit.errors import CnnkitError
from cnnkit.tasks.detect.postprocess import PostProcess, candidate_threshold, filter_detections

EXPORTABLE = ("fcos", "retinanet", "ssdlite")


class DenseDetector(nn.Module):
    """A cnnkit DetectionModel as a fixed-size graph: uint8 (B, 3, S, S) letterboxed images in,
    (boxes, scores) out. ``layout()`` says how ``select`` must rank its candidates."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        model = detector.model
        arch = detector.spec.arch
        if arch not in EXPORTABLE:
            raise CnnkitError(
                f"{detector.spec.name} cannot be exported: Faster R-CNN's proposal NMS is "
                f"inside its network; FCOS, RetinaNet and SSDlite export"
            )
        self.arch = arch
        self.size = int(detector.image_size)
        self.backbone = model.backbone
        self.head = model.head
        self.box_coder = model.box_coder
        transform = model.transform
        self.register_buffer("mean", torch.tensor(transform.image_mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(transform.image_std).view(1, 3, 1, 1))
        self.divisible = 1 if isinstance(model, SSD) else int(transform.size_divisible)
        self.topk = int(model.topk_candidates)
        anchors, levels = _anchors(model, self.size)
        self.register_buffer("anchors", anchors)
        self.levels = levels

    def layout(self) -> dict:
        """What ``select`` needs besides the post-processing settings."""
        return {
            "levels": list(self.levels),
            "topk_candidates": self.topk,
            "ranking": "per_class" if self.arch == "ssdlite" else "per_level",
        }

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        pad_h = -x.shape[-2] % self.divisible
        pad_w = -x.shape[-1] % self.divisible
        if pad_h or pad_w:  # GeneralizedRCNNTransform pads the batch to size_divisible
            x = nn.functional.pad(x, (0, pad_w, 0, pad_h))
        return list(self.backbone(x).values())

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images
        x = (x - self.mean) / self.std
        out = self.head(self._features(x))
        batch, count = out["bbox_regression"].shape[:2]
        codes = out["bbox_regression"].reshape(-1, 4)
        anchors = self.anchors.repeat(batch, 1)
        if self.arch == "fcos":
            boxes = self.box_coder.decode(codes, anchors)
            scores = torch.sqrt(out["cls_logits"].sigmoid() * out["bbox_ctrness"].sigmoid())
        else:
            boxes = self.box_coder.decode_single(codes, anchors)
            logits = out["cls_logits"]
            scores = logits.softmax(-1)[..., 1:] if self.arch == "ssdlite" else logits.sigmoid()
        boxes = boxes.reshape(batch, count, 4).clamp(0, self.size)
        return boxes, scores


def _anchors(model: nn.Module, size: int) -> tuple[torch.Tensor, list[int]]:
    """The model's anchors for one (size, size) image, and the anchors per pyramid level."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            device = next(model.parameters()).device
            images, _ = model.transform([torch.zeros(3, size, size, device=device)])
            features = model.backbone(images.tensors)
            features = list(features.values())
            anchors = model.anchor_generator(images, features)[0]
            if isinstance(model, (FCOS, RetinaNet)):
                per_place = len(anchors) // sum(f.shape[-2] * f.shape[-1] for f in features)
                levels = [per_place * f.shape[-2] * f.shape[-1] for f in features]
            else:
                levels = [len(anchors)]
    finally:
        model.train(was_training)
    return anchors.float().cpu(), levels


def select(
    boxes: torch.Tensor, scores: torch.Tensor, layout: dict, pp: PostProcess
) -> dict[str, torch.Tensor]:
    """One image's (A, 4) boxes and (A, C) scores -> its detections, as torchvision's
    postprocess_detections picks them: above the threshold, the top-k candidates per level (or
    per class), class-aware NMS (and box voting, as cnnkit's DetectionModel does it), at most
    ``pp.max_detections``, best first."""
    topk = int(layout["topk_candidates"])
    threshold = candidate_threshold(pp)
    num_classes = scores.shape[-1]
    kept_boxes, kept_scores, kept_labels = [], [], []
    if layout["ranking"] == "per_level":
        start = 0
        for count in layout["levels"]:
            level = scores[start : start + count].flatten()
            idx = torch.where(level > threshold)[0]
            top, order = level[idx].topk(min(topk, len(idx)))
            idx = idx[order]
            kept_boxes.append(boxes[start : start + count][idx // num_classes])
            kept_scores.append(top)
            kept_labels.append(idx % num_classes)
            start += count
    else:
        for label in range(num_classes):
            column = scores[:, label]
            idx = torch.where(column > threshold)[0]
            top, order = column[idx].topk(min(topk, len(idx)))
            kept_boxes.append(boxes[idx[order]])
            kept_scores.append(top)
            kept_labels.append(torch.full((len(top),), label, dtype=torch.int64))
    candidates = {
        "boxes": torch.cat(kept_boxes),
        "scores": torch.cat(kept_scores),
        "labels": torch.cat(kept_labels),
    }
    return filter_detections(candidates, pp)
