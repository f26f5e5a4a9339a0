"""A segmenter's part of report.html: mIoU, per-class IoU and Dice on the test split, the
pixel confusion matrix, predicted vs true masks, and an augmented training batch."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cnnkit.report.page import Page
from cnnkit.report.run import RunFiles, augmented_batch_section, fixed, test_evaluation


def add_sections(
    page: Page, files: RunFiles, segmenter: Any, data: str | os.PathLike, tmp: Path
) -> None:
    tta = str(files.config.get("tta") or "none")
    _, report, section = test_evaluation(page, segmenter, data, tmp, tta=tta)
    m = report.metrics
    section.figures(
        [
            ("mIoU", f"{m.miou:.4f}"),
            ("pixel accuracy", f"{m.pixel_accuracy:.4f}"),
            ("mean Dice", f"{m.dice:.4f}"),
            ("mean class accuracy", f"{m.mean_accuracy:.4f}"),
            ("labelled pixels", f"{m.pixels:,}"),
        ]
    )
    rows = m.confusion.sum(1)
    section.table(
        ["class", "IoU", "Dice", "pixels"],
        [
            [name, fixed(m.per_class_iou[name]), fixed(m.per_class_dice[name]), int(rows[i])]
            for i, name in enumerate(report.classes)
        ],
    )
    page.image_section(
        "Pixel confusion matrix", tmp / "eval" / "confusion_matrix.png", "pixel confusion matrix"
    )
    page.image_section(
        "Predicted vs true masks",
        tmp / "eval" / "gallery.png",
        "predicted and true masks",
        "Each row: the image, its true mask over it, the predicted mask over it (one colour per "
        "class, as in the augmented batch).",
    )
    from cnnkit.tasks.segment.show import show_segmentation_batch

    augmented_batch_section(page, files, data, tmp, show_segmentation_batch, "masks")
