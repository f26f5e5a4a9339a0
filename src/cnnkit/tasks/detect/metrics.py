"""COCO-style detection metrics: mAP@[.5:.95], mAP@.5, mAP@.75, AR@100, per class, PR curves.

The numbers are torchmetrics' ``MeanAveragePrecision`` on its pycocotools backend, i.e. COCO's
own evaluation (crowd boxes are neither matched nor missed; 101-point interpolated precision;
at most 100 detections per image). Classes are the 0-based indices into ``classes``; a class
without any ground-truth box has no AP (None), and the mean is over the classes that have one.
With no ground-truth box at all the overall values are -1, as COCO reports them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from cnnkit.tasks.detect.dataset import BoxTarget

RECALL_POINTS = np.linspace(0.0, 1.0, 101)  # COCO's recall thresholds


@dataclass
class DetectionMetrics:
    """COCO metrics of one evaluation; ``score`` (mAP@[.5:.95]) picks the best checkpoint."""

    map: float  # AP averaged over IoU 0.50:0.05:0.95 and over classes
    map_50: float
    map_75: float
    mar_100: float  # recall with at most 100 detections per image, averaged the same way
    per_class: dict[str, float | None]  # AP@[.5:.95] per class name; None: no ground truth
    per_class_50: dict[str, float | None] = field(default_factory=dict)  # AP@.5 per class
    # per class with ground truth: precision at each of COCO's 101 recall points, IoU 0.5
    pr_curves: dict[str, list[float]] = field(default_factory=dict)

    @property
    def score(self) -> float:
        return self.map

    def to_dict(self) -> dict:
        """map, map_50, map_75, mar_100 and per_class, as plain floats (None: no ground truth)."""
        return {
            "map": self.map,
            "map_50": self.map_50,
            "map_75": self.map_75,
            "mar_100": self.mar_100,
            "per_class": dict(self.per_class),
        }


def _target_dict(target: BoxTarget | dict) -> dict[str, torch.Tensor]:
    if not isinstance(target, BoxTarget):
        target = BoxTarget(target["boxes"], target["labels"], target.get("iscrowd"))
    return {
        "boxes": target.boxes.detach().cpu().float(),
        "labels": target.labels.detach().cpu(),
        "iscrowd": target.iscrowd.detach().cpu().to(torch.int64),
    }


def _prediction_dict(prediction: dict) -> dict[str, torch.Tensor]:
    return {
        "boxes": torch.as_tensor(prediction["boxes"]).detach().cpu().float().reshape(-1, 4),
        "scores": torch.as_tensor(prediction["scores"]).detach().cpu().float().reshape(-1),
        "labels": torch.as_tensor(prediction["labels"]).detach().cpu().to(torch.int64).reshape(-1),
    }


def _check_labels(items: Sequence[dict], n: int, what: str) -> None:
    for item in items:
        labels = item["labels"]
        if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= n):
            raise ValueError(f"{what} labels must be class indices 0..{n - 1}, got {labels}")


def _ap(precision: np.ndarray) -> float | None:
    """COCO's mean over the defined (> -1) precision values; None when nothing is defined."""
    defined = precision[precision > -1]
    return float(defined.mean()) if defined.size else None


def detection_metrics(
    predictions: Sequence[dict],
    targets: Sequence[BoxTarget | dict],
    classes: Sequence[str],
) -> DetectionMetrics:
    """COCO metrics of ``predictions`` (per image: boxes x1 y1 x2 y2, scores, 0-based labels)
    against ``targets`` (the same images' ``BoxTarget``s, in the same pixels)."""
    from torchmetrics.detection import MeanAveragePrecision

    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} predictions for {len(targets)} targets")
    preds = [_prediction_dict(p) for p in predictions]
    truth = [_target_dict(t) for t in targets]
    _check_labels(preds, len(classes), "prediction")
    _check_labels(truth, len(classes), "target")
    metric = MeanAveragePrecision(
        iou_type="bbox", class_metrics=True, extended_summary=True, backend="pycocotools"
    )
    metric.update(preds, truth)
    result = metric.compute()

    ids = result["classes"].reshape(-1).tolist()  # the class ids seen, sorted
    per_class_map = result["map_per_class"].reshape(-1).tolist()
    precision = result["precision"].numpy()  # (IoU 10, recall 101, class, area 4, max dets 3)
    per_class: dict[str, float | None] = {name: None for name in classes}
    per_class_50: dict[str, float | None] = {name: None for name in classes}
    curves: dict[str, list[float]] = {}
    for k, class_id in enumerate(ids):
        name = classes[int(class_id)]
        per_class[name] = per_class_map[k] if per_class_map[k] > -1 else None
        at_50 = precision[0, :, k, 0, -1]  # IoU 0.5, all areas, 100 detections
        per_class_50[name] = _ap(at_50)
        if per_class_50[name] is not None:
            curves[name] = [float(v) for v in at_50]
    return DetectionMetrics(
        map=float(result["map"]),
        map_50=float(result["map_50"]),
        map_75=float(result["map_75"]),
        mar_100=float(result["mar_100"]),
        per_class=per_class,
        per_class_50=per_class_50,
        pr_curves=curves,
    )


def plot_pr_curves(metrics: DetectionMetrics, path: str | Path) -> Path:
    """Precision-recall curves at IoU 0.5, one line per class with its AP@.5, as an image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, ax = plt.subplots(figsize=(6, 5))
    for name, precision in metrics.pr_curves.items():
        ax.plot(RECALL_POINTS, precision, label=f"{name} (AP50 {metrics.per_class_50[name]:.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(f"precision-recall at IoU 0.5 (mAP50 {metrics.map_50:.3f}, mAP {metrics.map:.3f})")
    if metrics.pr_curves:
        ax.legend(loc="lower left", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
