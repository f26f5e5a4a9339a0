"""report.html: one self-contained page per run (images inline, no network), built from the run
folder's records and an evaluation of its best.pt; `compare` puts runs side by side.

The page's common parts (summary, recipe, curves, export parity) are here; each task adds its
own (cnnkit.tasks.<task>.report_page.add_sections), found through SECTIONS like the task
registry, so this package imports no task's code until it builds a page for one.
"""

from __future__ import annotations

import os
import shlex
import tempfile
import time
from pathlib import Path

from cnnkit.errors import CnnkitError
from cnnkit.report.page import Page
from cnnkit.report.run import (
    RunFiles,
    curves_section,
    export_section,
    read_run,
    summary_section,
)

SECTIONS: dict[str, str] = {
    "classify": "cnnkit.tasks.classify.report_page:add_sections",
    "detect": "cnnkit.tasks.detect.report_page:add_sections",
    "segment": "cnnkit.tasks.segment.report_page:add_sections",
    "embed": "cnnkit.tasks.embed.report_page:add_sections",
    "generate": "cnnkit.tasks.generate.report_page:add_sections",
}
REPORT = "report.html"


def build_report(
    run: str | os.PathLike,
    out: str | os.PathLike | None = None,
    data: str | os.PathLike | None = None,
    device: str = "auto",
) -> Path:
    """Write the run's report.html (or ``out``) and return its path. ``data``: the data to
    evaluate best.pt on (default: the run's own, from any working directory)."""
    from cnnkit.data.datasets import evaluation_data
    from cnnkit.predict import load
    from cnnkit.tasks.base import resolve_target

    files = read_run(run)
    path = Path(out) if out is not None else files.run_dir / REPORT
    if path.suffix.lower() not in (".html", ".htm"):
        raise CnnkitError(f"the report is an HTML file: --out must end in .html, not {path.name}")
    if not path.parent.is_dir():
        raise CnnkitError(f"cannot write {path}: folder {path.parent} does not exist")
    best = files.run_dir / "best.pt"
    started = time.perf_counter()
    page = Page(f"cnnkit run {files.title}", _subtitle(files))
    summary_section(page, files)
    with tempfile.TemporaryDirectory(prefix="cnnkit-report-") as tmp:
        curves_section(page, files, Path(tmp))
        if best.is_file():
            predictor = load(best, device=device)
            chosen = evaluation_data(data, predictor.data_location, predictor.config)
            if data is not None:
                page.section("Evaluation data").text(
                    f"best.pt is evaluated on {data}, not on the data it trained on "
                    f"({files.config.get('data')}); the summary's figures are the run's own.",
                    note=True,
                )
            resolve_target(SECTIONS[predictor.task])(page, files, predictor, chosen, Path(tmp))
        else:
            page.section("Evaluation").text(
                "no best.pt in this run folder (the run stopped before its first epoch ended)",
                note=True,
            )
        export_section(page, files)
        page.section("About this page").text(
            f"Built by cnnkit in {time.perf_counter() - started:.1f} s from {files.run_dir}; "
            f"rebuild it with `cnnkit report {shlex.quote(str(files.run_dir))}`.",
            note=True,
        )
        return page.write(path)


def _subtitle(files: RunFiles) -> str:
    data = files.config.get("data", "?")
    return f"{files.config.get('model', '?')} on {data}, {files.task}"


__all__ = ["REPORT", "build_report"]
