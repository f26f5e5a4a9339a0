"""Segmentation metrics from one confusion matrix: mIoU, per-class IoU, Dice, pixel accuracy.

Every figure comes from the (C, C) matrix of true class (rows) against predicted class
(columns) over all pixels of a set, pixels marked ignore (255) left out, as torchvision's
references/segmentation and mmsegmentation compute them: IoU_c = TP / (TP + FP + FN), Dice_c =
2 TP / (2 TP + FP + FN), pixel accuracy = trace / total. A class with no true and no predicted
pixel has no IoU (None) and is left out of the mean, so a set without some class is not scored
as if the model had got it wrong. The matrix is one ``torch.bincount`` per image (what
torchmetrics' multiclass confusion matrix does too; segmentation needs no extra package).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

from cnnkit.tasks.segment.dataset import IGNORE_INDEX


def confusion_matrix(
    predicted: torch.Tensor, truth: torch.Tensor, num_classes: int
) -> torch.Tensor:
    """int64 (C, C): pixels of true class i predicted as j; ignored pixels (255, or any value
    >= num_classes in ``truth``) are not counted."""
    if predicted.shape != truth.shape:
        raise ValueError(
            f"prediction {tuple(predicted.shape)} and mask {tuple(truth.shape)} differ"
        )
    t = truth.reshape(-1).long()
    p = predicted.reshape(-1).long()
    keep = (t >= 0) & (t < num_classes)
    t, p = t[keep], p[keep].clamp(0, num_classes - 1)
    counts = torch.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


@dataclass
class SegmentationMetrics:
    """The figures of one evaluation, from its confusion matrix."""

    classes: list[str]
    confusion: torch.Tensor  # int64 (C, C), rows true, columns predicted

    def _tp_fp_fn(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        m = self.confusion.double()
        tp = m.diag()
        return tp, m.sum(0) - tp, m.sum(1) - tp

    def _per_class(self, dice: bool) -> list[float | None]:
        tp, fp, fn = self._tp_fp_fn()
        num = 2 * tp if dice else tp
        den = (2 * tp if dice else tp) + fp + fn
        return [None if d == 0 else float(n / d) for n, d in zip(num, den, strict=True)]

    @property
    def per_class_iou(self) -> dict[str, float | None]:
        return dict(zip(self.classes, self._per_class(dice=False), strict=True))

    @property
    def per_class_dice(self) -> dict[str, float | None]:
        return dict(zip(self.classes, self._per_class(dice=True), strict=True))

    @property
    def miou(self) -> float:
        return _mean(self._per_class(dice=False))

    @property
    def dice(self) -> float:
        """Mean Dice (F1) over the classes present in truth or prediction."""
        return _mean(self._per_class(dice=True))

    @property
    def pixel_accuracy(self) -> float:
        total = int(self.confusion.sum())
        return float(self.confusion.diag().sum()) / total if total else 0.0

    @property
    def mean_accuracy(self) -> float:
        """Mean over classes of the share of each class's true pixels predicted right."""
        rows = self.confusion.sum(1)
        present = rows > 0
        if not present.any():
            return 0.0
        return float((self.confusion.diag()[present].double() / rows[present]).mean())

    @property
    def pixels(self) -> int:
        return int(self.confusion.sum())

    def to_dict(self) -> dict[str, Any]:
        """Plain values; with no labelled pixel at all the means are null, not 0."""
        scored = self.pixels > 0
        return {
            "miou": self.miou if scored else None,
            "per_class_iou": self.per_class_iou,
            "pixel_accuracy": self.pixel_accuracy if scored else None,
            "mean_accuracy": self.mean_accuracy if scored else None,
            "dice": self.dice if scored else None,
            "per_class_dice": self.per_class_dice,
            "pixels": self.pixels,
            "confusion_matrix": self.confusion.tolist(),
        }


def _mean(values: list[float | None]) -> float:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else 0.0


def segmentation_metrics(
    predictions: Iterable[torch.Tensor], masks: Iterable[torch.Tensor], classes: list[str]
) -> SegmentationMetrics:
    """Metrics of predicted class maps against true masks (pairs of the same (h, w) size),
    ignored pixels (``IGNORE_INDEX``) left out."""
    n = len(classes)
    total = torch.zeros(n, n, dtype=torch.int64)
    for predicted, truth in zip(predictions, masks, strict=True):
        total += confusion_matrix(predicted.cpu(), truth.cpu(), n)
    return SegmentationMetrics(list(classes), total)


__all__ = ["IGNORE_INDEX", "SegmentationMetrics", "confusion_matrix", "segmentation_metrics"]
