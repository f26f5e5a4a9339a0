"""A detector's part of report.html: COCO-style mAP and per-class AP on the test split,
precision-recall curves, predicted vs true boxes, and an augmented training batch."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cnnkit.report.page import Page
from cnnkit.report.run import RunFiles, augmented_batch_section, fixed


def add_sections(
    page: Page, files: RunFiles, detector: Any, data: str | os.PathLike, tmp: Path
) -> None:
    images, split = detector.split_images(data, "test", progress=False)
    report = detector.evaluate(images, out_dir=tmp / "eval", progress=False)
    m = report.metrics
    section = page.section(f"Test evaluation ({split} split, {report.images:,} images)")
    section.figures(
        [
            ("mAP@[.5:.95]", f"{m.map:.4f}"),
            ("mAP@.5", f"{m.map_50:.4f}"),
            ("mAP@.75", f"{m.map_75:.4f}"),
            ("recall@100", f"{m.mar_100:.4f}"),
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
    curves = tmp / "eval" / "pr_curves.png"
    if curves.is_file():
        page.section("Precision-recall").image(curves, "precision-recall curves per class")
    gallery = tmp / "eval" / "gallery.png"
    if gallery.is_file():
        page.section("Predicted vs true boxes").image(gallery, "predicted and true boxes").text(
            f"Predictions scoring at least {report.gallery_conf:.2f} beside the true boxes.",
            note=True,
        )
    from cnnkit.tasks.detect.show import show_detection_batch

    augmented_batch_section(page, files, data, tmp, show_detection_batch, "boxes")
