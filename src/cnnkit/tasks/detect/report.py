"""What `cnnkit evaluate` prints and writes for a detector: mAP, per-class AP, PR curves, and a
gallery of predicted vs true boxes."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cnnkit.tasks.detect.dataset import BoxTarget, DetectionSet
from cnnkit.tasks.detect.metrics import DetectionMetrics, detection_metrics, plot_pr_curves
from cnnkit.tasks.evaluation_data import skipped_line

GALLERY_IMAGES = 12


@dataclass
class DetectionReport:
    """COCO-style metrics of one evaluation, with what the gallery draws."""

    classes: list[str]
    metrics: DetectionMetrics
    images: int
    boxes: int
    out_dir: Path | None = None
    gallery_conf: float = 0.25  # the gallery draws predictions scoring at least this
    tta: str = "none"  # the test-time augmentation the predictions were made with
    # kept for the gallery: the first images, their predictions and true boxes (original px)
    _shown: tuple[list[torch.Tensor], list[dict], list[BoxTarget]] = field(
        default=([], [], []), repr=False
    )
    data: str | None = None  # where the evaluated images came from
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason) left out
    postprocess: dict[str, float] | None = None  # the NMS IoU and box voting scored with

    @property
    def map(self) -> float:
        return self.metrics.map

    @property
    def map_50(self) -> float:
        return self.metrics.map_50

    @property
    def map_75(self) -> float:
        return self.metrics.map_75

    def to_dict(self) -> dict[str, Any]:
        values = self.metrics.to_dict()
        if self.boxes == 0:  # COCO's -1 (nothing to score) is no score: null, not a number
            values.update(map=None, map_50=None, map_75=None, mar_100=None)
        return {
            **values,
            "per_class_50": dict(self.metrics.per_class_50),
            "images": self.images,
            "boxes": self.boxes,
            "tta": self.tta,
            "postprocess": self.postprocess,
            "data": self.data,
            "skipped": [{"file": file, "reason": reason} for file, reason in self.skipped],
        }

    def lines(self) -> list[str]:
        m = self.metrics
        first = f"{self.images} images, {self.boxes} boxes" + (
            f" (TTA {self.tta})" if self.tta != "none" else ""
        )
        left_out = skipped_line(self.skipped)
        if self.boxes == 0:
            return [f"{first}: no true box, so no mAP to report", *left_out]
        out = [
            first,
            *left_out,
            f"mAP@[.5:.95] {m.map:.4f}   mAP@.5 {m.map_50:.4f}   mAP@.75 {m.map_75:.4f}   "
            f"recall@100 {m.mar_100:.4f}",
        ]
        width = max((len(c) for c in self.classes), default=5)
        out.append(f"{'class':<{width}}  {'AP':>7}  {'AP@.5':>7}")
        for name in self.classes:
            ap, ap50 = m.per_class.get(name), m.per_class_50.get(name)
            out.append(f"{name:<{width}}  {_fmt(ap):>7}  {_fmt(ap50):>7}")
        return out

    def show(self) -> None:
        print("\n".join(self.lines()))

    def write(self, out_dir: Path) -> None:
        """metrics.json, per_class.csv, pr_curves.png and gallery.png in out_dir."""
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "metrics.json").write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        with open(out_dir / "per_class.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["class", "ap", "ap_50"])
            for name in self.classes:
                ap, ap50 = self.metrics.per_class.get(name), self.metrics.per_class_50.get(name)
                writer.writerow([name, "" if ap is None else f"{ap:.6f}", _csv(ap50)])
        plot_pr_curves(self.metrics, out_dir / "pr_curves.png")
        images, predictions, targets = self._shown
        if images:
            from cnnkit.tasks.detect.draw import gallery

            gallery(
                images,
                predictions,
                targets,
                self.classes,
                out_dir / "gallery.png",
                conf=self.gallery_conf,
            )
        self.out_dir = out_dir


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _csv(value: float | None) -> str:
    return "" if value is None else f"{value:.6f}"


def detection_report(
    predictions: list[dict[str, torch.Tensor]],
    targets: list[BoxTarget],
    classes: list[str],
    data: DetectionSet,
    conf: float = 0.25,
    tta: str = "none",
) -> DetectionReport:
    """The report of predictions against targets (both in the original images' pixels); the
    gallery shows the first images at their stored size, boxes scaled to it, the predictions
    scoring at least ``conf`` (what predict shows by default)."""
    metrics = detection_metrics(predictions, targets, classes)
    shown = min(GALLERY_IMAGES, len(data))
    images, preds, truths = [], [], []
    for i in range(shown):
        sx, sy = data.stored_scale(i)
        images.append(data.images[i])
        preds.append({**predictions[i], "boxes": predictions[i]["boxes"] / _xyxy(sx, sy)})
        truths.append(targets[i].scaled(1 / sx, 1 / sy))
    boxes = sum(len(t) for t in targets)
    return DetectionReport(
        list(classes), metrics, len(targets), boxes, None, conf, tta, (images, preds, truths)
    )


def _xyxy(sx: float, sy: float) -> torch.Tensor:
    return torch.tensor([sx, sy, sx, sy])
