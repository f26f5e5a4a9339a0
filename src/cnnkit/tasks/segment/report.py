"""What `cnnkit evaluate` prints and writes for a segmenter: mIoU, per-class IoU and Dice,
pixel accuracy, the confusion matrix, and a gallery of image / truth / prediction."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cnnkit.tasks.evaluation_data import skipped_line
from cnnkit.tasks.segment.metrics import SegmentationMetrics

GALLERY_IMAGES = 8


@dataclass
class SegmentationReport:
    """The metrics of one evaluation, with what the gallery draws."""

    metrics: SegmentationMetrics
    images: int
    tta: str = "none"
    out_dir: Path | None = None
    # the first images, their true masks and the predictions (at the images' size)
    _shown: tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]] = field(
        default=([], [], []), repr=False
    )
    data: str | None = None  # where the evaluated images came from
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason) left out

    @property
    def classes(self) -> list[str]:
        return self.metrics.classes

    @property
    def miou(self) -> float:
        return self.metrics.miou

    @property
    def per_class_iou(self) -> dict[str, float | None]:
        return self.metrics.per_class_iou

    @property
    def pixel_accuracy(self) -> float:
        return self.metrics.pixel_accuracy

    @property
    def dice(self) -> float:
        return self.metrics.dice

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.metrics.to_dict(),
            "images": self.images,
            "tta": self.tta,
            "data": self.data,
            "skipped": [{"file": file, "reason": reason} for file, reason in self.skipped],
        }

    def lines(self) -> list[str]:
        m = self.metrics
        left_out = skipped_line(self.skipped)
        if m.pixels == 0:
            return [f"{self.images} images, no labelled pixels: nothing to score", *left_out]
        tta = f" (TTA {self.tta})" if self.tta != "none" else ""
        out = [
            f"{self.images} images, {m.pixels:,} labelled pixels{tta}",
            *left_out,
            f"mIoU {m.miou:.4f}   pixel accuracy {m.pixel_accuracy:.4f}   mean Dice {m.dice:.4f}"
            f"   mean class accuracy {m.mean_accuracy:.4f}",
        ]
        width = max((len(c) for c in self.classes), default=5)
        out.append(f"{'class':<{width}}  {'IoU':>7}  {'Dice':>7}  {'pixels':>12}")
        rows = m.confusion.sum(1)
        for i, name in enumerate(self.classes):
            iou, dice = m.per_class_iou[name], m.per_class_dice[name]
            out.append(f"{name:<{width}}  {_fmt(iou):>7}  {_fmt(dice):>7}  {int(rows[i]):>12,}")
        return out

    def show(self) -> None:
        print("\n".join(self.lines()))

    def write(self, out_dir: Path) -> None:
        """metrics.json, per_class.csv, confusion_matrix.csv / .png and gallery.png."""
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "metrics.json").write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        m = self.metrics
        with open(out_dir / "per_class.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["class", "iou", "dice", "pixels"])
            rows = m.confusion.sum(1)
            for i, name in enumerate(self.classes):
                iou, dice = m.per_class_iou[name], m.per_class_dice[name]
                writer.writerow([name, _csv(iou), _csv(dice), int(rows[i])])
        with open(out_dir / "confusion_matrix.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["true \\ predicted", *self.classes])
            for name, row in zip(self.classes, m.confusion.tolist(), strict=True):
                writer.writerow([name, *row])
        _plot_confusion(m, out_dir / "confusion_matrix.png")
        images, truths, predictions = self._shown
        if images:
            from cnnkit.tasks.segment.draw import gallery

            gallery(images, truths, predictions, len(self.classes), out_dir / "gallery.png")
        self.out_dir = out_dir


def _plot_confusion(m: SegmentationMetrics, path: Path) -> None:
    """Row-normalised confusion matrix (share of each true class's pixels) as a heat map; with
    many classes only the 30 with the most pixels are drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    confusion = m.confusion.double()
    keep = confusion.sum(1).argsort(descending=True)[:30].sort().values
    shown = confusion[keep][:, keep]
    norm = shown / shown.sum(1, keepdim=True).clamp_min(1)
    names = [m.classes[int(i)] for i in keep]
    side = max(4.0, 0.35 * len(names) + 2)
    fig, ax = plt.subplots(figsize=(side, side))
    ax.imshow(norm.numpy(), cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=90)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if len(names) <= 12:
        for i in range(len(names)):
            for j in range(len(names)):
                ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=8)
    ax.set_title("pixels: row shares")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _csv(value: float | None) -> str:
    return "" if value is None else f"{value:.6f}"
