"""An embedding run's part of report.html: verification on pairs of unseen people, and its ROC."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cnnkit.report.page import Page
from cnnkit.report.run import RunFiles


def add_sections(
    page: Page, files: RunFiles, embedder: Any, data: str | os.PathLike, tmp: Path
) -> None:
    from cnnkit.faces.evaluate import evaluate_folder

    report = evaluate_folder(embedder, data, "test", out_dir=tmp / "eval")
    section = page.section("Verification")
    section.text(
        f"Pairs of {report.source}: people the model did not train on, unless that data is "
        "not the run's own. Accuracy is LFW's 10-fold protocol (each fold scored at the "
        "threshold the other nine chose)."
    )
    threshold = f"{report.threshold:.3f}" if report.threshold is not None else "none"
    at = report.accuracy_at_threshold
    section.figures(
        [
            ("10-fold accuracy", f"{report.accuracy:.2%} +- {report.accuracy_std:.2%}"),
            ("ROC AUC", f"{report.auc:.4f}"),
            ("model's threshold", threshold),
            ("accuracy at it", f"{at:.2%}" if at is not None else "-"),
            ("pairs", f"{report.pairs} ({report.same_pairs} same)"),
        ]
    )
    page.image_section("Verification ROC", tmp / "eval" / "roc.png", "verification ROC curve")
