"""A multi-label evaluation written for people: the per-label table, metrics.json,
per_label.csv, roc.png (one curve per label), and its part of report.html."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from cnnkit.tasks.classify.multilabel import MultilabelReport
from cnnkit.tasks.classify.roc import save_roc

MAX_CURVES = 14  # ChestMNIST's findings all fit in one legend


def _fixed(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _rows(report: MultilabelReport) -> list[list[str]]:
    return [
        [
            f.name,
            str(f.positives),
            _fixed(f.auc),
            _fixed(f.average_precision),
            f"{f.threshold:.3f}",
            _fixed(f.sensitivity),
            _fixed(f.specificity),
        ]
        for f in report.labels
    ]


COLUMNS = ["label", "positives", "AUC", "AP", "threshold", "sensitivity", "specificity"]


def print_multilabel(report: MultilabelReport, console: Any = None) -> None:
    from rich.table import Table

    from cnnkit.tasks.classify.report import output_console

    console = console or output_console()
    table = Table(title="per-label metrics")
    for column in COLUMNS:
        table.add_column(column, justify="left" if column == "label" else "right")
    for row in _rows(report):
        table.add_row(*row)
    console.print(table)
    summary = report.to_dict()
    source = "chosen on validation" if report.threshold_chosen else "default 0.5"
    console.print(
        f"macro ROC AUC {_fixed(summary['auc'], 4)}   average precision "
        f"{_fixed(summary['average_precision'], 4)}   sensitivity "
        f"{_fixed(summary['sensitivity'])}   specificity {_fixed(summary['specificity'])}   "
        f"(thresholds {source})"
    )
    console.print(
        f"loss {report.loss:.4f}   label accuracy {report.label_accuracy:.2%}   exact match "
        f"{report.exact_match:.2%}   images {report.images}"
        + (f"   test-time augmentation {report.tta}" if report.tta != "none" else "")
    )


def write_multilabel(report: MultilabelReport, out_dir: Path) -> dict[str, Path]:
    """metrics.json, per_label.csv and roc.png in out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"metrics": out_dir / "metrics.json", "per_label": out_dir / "per_label.csv"}
    paths["metrics"].write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    with open(paths["per_label"], "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([c.lower() for c in COLUMNS])
        writer.writerows(_rows(report))
    roc = plot_label_rocs(report, out_dir / "roc.png")
    if roc is not None:
        paths["roc"] = roc
    return paths


def plot_label_rocs(report: MultilabelReport, path: Path) -> Path | None:
    """roc.png: each label's ROC curve (those with both sides, at most MAX_CURVES), each
    stored threshold's point marked on its curve."""
    import matplotlib
    from torchmetrics.functional.classification import binary_roc

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if report._scores is None:
        return None
    probs, truth = report._scores
    shown = [k for k, f in enumerate(report.labels) if f.auc is not None][:MAX_CURVES]
    if not shown:
        return None
    fig, ax = plt.subplots(figsize=(6, 6))
    for k in shown:
        figures = report.labels[k]
        fpr, tpr, _ = binary_roc(probs[:, k], truth[:, k])
        (line,) = ax.plot(fpr.numpy(), tpr.numpy(), label=f"{figures.name} ({figures.auc:.3f})")
        ax.plot(1 - figures.specificity, figures.sensitivity, "o", color=line.get_color())
    return save_roc(fig, ax, path, "ROC per label (AUC); dots: the stored thresholds")


def add_multilabel_sections(page: Any, report: MultilabelReport, section: Any, tmp: Path) -> None:
    """report.html's evaluation of a multi-label run: macro figures, the per-label table and
    the ROC curves (the confusion matrix, top losses and calibration are single-label's)."""
    summary = report.to_dict()
    section.figures(
        [
            ("macro ROC AUC", _fixed(summary["auc"], 4)),
            ("macro average precision", _fixed(summary["average_precision"], 4)),
            ("macro sensitivity", _fixed(summary["sensitivity"])),
            ("macro specificity", _fixed(summary["specificity"])),
            ("label accuracy", f"{report.label_accuracy:.2%}"),
            ("exact match", f"{report.exact_match:.2%}"),
            ("loss", f"{report.loss:.4f}"),
        ]
    )
    source = "chosen on validation" if report.threshold_chosen else "the default 0.5"
    section.text(
        f"Multi-label: each of the {len(report.classes)} labels is decided by its own threshold "
        f"on its probability ({source}, stored in best.pt and used by predict).",
        note=True,
    )
    section.table(COLUMNS, _rows(report))
    page.image_section("ROC", tmp / "eval" / "roc.png", "ROC curve per label")
