"""An evaluation written for people: a printed table, CSV files, and the confusion-matrix PNG."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from rich.console import Console
from rich.table import Table

from cnnkit.tasks.classify.interpret import plot_reliability
from cnnkit.tasks.classify.metrics import ClassificationReport
from cnnkit.tasks.classify.roc import rate_text


def output_console() -> Console:
    """A rich console for tables and lines: the terminal's (or notebook's, or $COLUMNS') width;
    piped or in a log, wide enough that nothing is cut or wrapped (rich assumes 80 there)."""
    console = Console()
    if console.is_terminal or console.is_jupyter or os.environ.get("COLUMNS"):
        return console
    return Console(width=1_000, soft_wrap=True)


def print_report(report: ClassificationReport, console: Console | None = None) -> None:
    console = console or output_console()
    if getattr(report, "multilabel", False):  # a MultilabelReport prints its per-label table
        report.show(console)  # type: ignore[attr-defined]
        return
    table = Table(title="per-class metrics", show_lines=False)
    for column in ("class", "precision", "recall", "f1", "support"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for i, name in enumerate(report.classes):
        table.add_row(
            name,
            f"{report.precision[i]:.3f}",
            f"{report.recall[i]:.3f}",
            f"{report.f1[i]:.3f}",
            str(report.support[i]),
        )
    console.print(table)
    decided = (
        f" (at the threshold; argmax {report.argmax_top1:.2%})"
        if report.argmax_top1 is not None
        else ""
    )
    console.print(
        f"loss {report.loss:.4f}   top-1 {report.top1:.2%}{decided}   top-5 {report.top5:.2%}   "
        f"macro F1 {report.macro_f1:.3f}   balanced accuracy {report.balanced_accuracy:.2%}   "
        f"ECE {report.ece:.3f}   images {sum(report.support)}"
    )
    if report.auc is not None:
        console.print(
            f"ROC AUC {report.auc:.4f}   average precision {report.average_precision:.4f}"
            + ("" if len(report.classes) == 2 else "   (one class against the rest, macro)")
        )
    point = report.operating
    if point is not None:
        source = "chosen on validation" if report.threshold_chosen else "default"
        # a rate over no images is undefined: said so, not printed as 0%
        sens = rate_text(point.sensitivity, "positive")
        spec = rate_text(point.specificity, "negative")
        console.print(
            f"positive class '{report.classes[1]}' at threshold {point.threshold:.3f} ({source}):"
            f"   sensitivity {sens}   specificity {spec}   accuracy {point.accuracy:.2%}"
        )
    if report.confused:
        pairs = ", ".join(f"{t} as {p} ({n})" for t, p, n in report.confused[:3])
        console.print(f"most confused: {pairs}")
    if report.top1_without_tta is not None:
        gain = (report.top1 - report.top1_without_tta) * 100
        console.print(
            f"test-time augmentation ({report.tta}): top-1 {report.top1:.2%}, "
            f"{report.top1_without_tta:.2%} without ({gain:+.2f} points)"
        )


def write_report(report: ClassificationReport, out_dir: Path) -> dict[str, Path]:
    """metrics.json, per_class.csv, confusion_matrix.csv/.png, most_confused.csv,
    reliability.png and roc.png in out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "metrics": out_dir / "metrics.json",
        "per_class": out_dir / "per_class.csv",
        "confusion_csv": out_dir / "confusion_matrix.csv",
        "confusion_png": out_dir / "confusion_matrix.png",
        "most_confused": out_dir / "most_confused.csv",
        "reliability": out_dir / "reliability.png",
    }
    paths["metrics"].write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    with open(paths["per_class"], "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["class", "precision", "recall", "f1", "support"])
        for i, name in enumerate(report.classes):
            writer.writerow(
                [
                    name,
                    f"{report.precision[i]:.4f}",
                    f"{report.recall[i]:.4f}",
                    f"{report.f1[i]:.4f}",
                    report.support[i],
                ]
            )
    with open(paths["confusion_csv"], "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["true \\ predicted", *report.classes])
        for name, row in zip(report.classes, report.confusion.tolist(), strict=True):
            writer.writerow([name, *row])
    plot_confusion(report, paths["confusion_png"])
    with open(paths["most_confused"], "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["true", "predicted", "images"])
        writer.writerows(report.confused)
    if report.calibration_bins:
        plot_reliability(report.calibration_bins, report.ece, paths["reliability"])
    roc = report.plot_roc(out_dir / "roc.png")
    if roc is not None:
        paths["roc"] = roc
    return paths


def plot_confusion(report: ClassificationReport, path: Path, normalize: bool = False) -> None:
    """The confusion matrix as counts, or (``normalize``) as each true class's share."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = report.confusion.numpy()
    if normalize:
        cm = cm / cm.sum(1, keepdims=True).clip(min=1)
    n = len(report.classes)
    size = max(5.0, 0.45 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(cm, cmap="Blues")
    ticks = range(n)
    ax.set_xticks(ticks, report.classes, rotation=90 if n > 10 else 45, ha="right")
    ax.set_yticks(ticks, report.classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("row shares" if normalize else f"counts (top-1 {report.top1:.1%})")
    if n <= 20:
        limit = cm.max() / 2 if cm.size else 0
        for i in range(n):
            for j in range(n):
                color = "white" if cm[i, j] > limit else "black"
                shown = f"{cm[i, j]:.2f}" if normalize else str(cm[i, j])
                ax.text(j, i, shown, ha="center", va="center", color=color, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
