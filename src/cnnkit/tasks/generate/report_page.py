"""A GAN's part of report.html: the final distances beside their real-vs-real floor, the
losses, and the fixed-noise grids of the first, best and last epochs (the figures are the run's
own from metrics.json and history.csv: the page computes none a second way)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cnnkit.report.page import Page
from cnnkit.report.run import RunFiles


def _number(value: Any, digits: int) -> str:
    return f"{value:.{digits}f}" if isinstance(value, int | float) else "-"


def add_sections(
    page: Page, files: RunFiles, generator: Any, data: str | os.PathLike, tmp: Path
) -> None:
    m = files.metrics
    section = page.section("Distances to real test images")
    section.figures(
        [
            ("fd_lite0 (lower is better)", _number(m.get("test_fd_lite0"), 2)),
            ("real-vs-real floor fd_lite0", _number(m.get("floor_fd_lite0"), 2)),
            ("kid_lite0", _number(m.get("test_kid_lite0"), 4)),
            ("real-vs-real floor kid_lite0", _number(m.get("floor_kid_lite0"), 4)),
            ("images each", str(m.get("test_images", "-"))),
        ]
    )
    section.text(
        "Fréchet and kernel distances on ImageNet EfficientNet-Lite0 features (not Inception "
        "FID: another scale). The floor is the distance between two disjoint sets of real test "
        "images of the same size: no generator can be expected to go below it.",
        note=True,
    )
    rows = [
        [row.get("epoch"), _number(_float(row.get("train_d_loss")), 4)]
        + [_number(_float(row.get("train_g_loss")), 4), _number(_float(row.get("val_fd_lite0")), 2)]
        for row in files.history
    ]
    page.section("Losses and distance per epoch").table(
        ["epoch", "D loss", "G loss", "val fd_lite0"], rows
    )
    samples = files.run_dir / "samples"
    epochs = sorted(samples.glob("epoch_*.png"))
    if not epochs:
        return
    best = samples / f"epoch_{int(m.get('best_epoch') or 0):03d}.png"
    shown = {"first epoch": epochs[0], "best.pt's epoch": best, "last epoch": epochs[-1]}
    page.section("Samples from fixed noise").images(
        [(path, f"{label}: {path.stem}") for label, path in shown.items() if path.is_file()]
    )


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
