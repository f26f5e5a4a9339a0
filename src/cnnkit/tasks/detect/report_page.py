"""A detector's part of report.html: COCO-style mAP and per-class AP on the test split,
precision-recall curves, predicted vs true boxes, and an augmented training batch."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cnnkit.report.page import Page
from cnnkit.report.run import RunFiles, augmented_batch_section, fixed, test_evaluation


def add_sections(
    page: Page, files: RunFiles, detector: Any, data: str | os.PathLike, tmp: Path
) -> None:
    _, report, section = test_evaluation(page, detector, data, tmp)
    m = report.metrics

    def shown(value: float) -> str:  # no true box: COCO's -1 is no score
        return f"{value:.4f}" if report.boxes else "none (no true box)"

    section.figures(
        [
            ("mAP@[.5:.95]", shown(m.map)),
            ("mAP@.5", shown(m.map_50)),
            ("mAP@.75", shown(m.map_75)),
            ("recall@100", shown(m.mar_100)),
            ("true boxes", f"{report.boxes:,}"),
        ]
    )
    section.table(
        ["class", "AP", "AP@.5"],
        [
            [name, fixed(m.per_class.get(name)), fixed(m.per_class_50.get(name))]
            for name in report.classes
        ],  # fmt: skip
    )
    page.image_section(
        "Precision-recall", tmp / "eval" / "pr_curves.png", "precision-recall curves per class"
    )
    page.image_section(
        "Predicted vs true boxes",
        tmp / "eval" / "gallery.png",
        "predicted and true boxes",
        f"Predictions scoring at least {report.gallery_conf:.2f} beside the true boxes.",
    )
    from cnnkit.tasks.detect.show import show_detection_batch

    augmented_batch_section(page, files, data, tmp, show_detection_batch, "boxes")
