"""What every run's report shows, whatever its task: the summary, the recipe, the curves and the
export parity table, read from the run folder's own files."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from cnnkit.config import TrainConfig
from cnnkit.engine import run_folder
from cnnkit.errors import CnnkitError
from cnnkit.report.page import Page

# the config keys a recipe shows even at their defaults
ALWAYS_SHOWN = ("data", "model", "epochs", "batch_size", "optimizer", "lr", "augment")
# keys that only say where things go, not how the model was trained
NOT_RECIPE = ("project", "name", "device", "tensorboard", "report", "data_root")
SCORES = {
    "classify": "accuracy",
    "detect": "map",
    "segment": "miou",
    "generate": "fd_lite0",
    "embed": "pair_accuracy",
}


class UnreadableRun(CnnkitError):
    """A run folder whose records cannot be read: a comparison of several runs leaves it out."""


@dataclass
class RunFiles:
    """A run folder's records: its resolved config, metrics.json and history.csv."""

    run_dir: Path
    config: dict[str, Any]
    metrics: dict[str, Any]
    history: list[dict[str, str]]
    history_note: str | None = None  # why history.csv's curves are left out (it is corrupt)

    @property
    def task(self) -> str:
        return str(self.metrics.get("task") or "classify")

    @property
    def score_name(self) -> str:
        if self.task == "classify" and self.metrics.get("best_by") == "val_auc":
            return "auc"  # a multi-label classifier: best.pt by the validation macro AUC
        return SCORES.get(self.task, "accuracy")

    @property
    def title(self) -> str:
        return self.run_dir.resolve().name


def read_run(run: str | Path) -> RunFiles:
    """A run folder's files, or one line saying what is missing or broken."""
    run_dir = Path(run)
    if run_dir.is_file() and run_dir.suffix == ".pt":
        run_dir = run_dir.parent
    if run_dir.is_file():
        raise CnnkitError(f"{run} is a file: give its run folder ({run_dir.parent})")
    if not run_dir.is_dir():
        raise CnnkitError(f"{run}: no such run folder")
    if not (run_dir / "config.yaml").is_file():
        raise CnnkitError(f"{run_dir} is not a run folder (it has no config.yaml)")
    config = _read(run_dir / "config.yaml", yaml.safe_load) or {}
    metrics_file = run_dir / "metrics.json"
    metrics = _read(metrics_file, json.loads) if metrics_file.is_file() else {}
    if not isinstance(config, dict) or not isinstance(metrics, dict):
        raise UnreadableRun(f"{run_dir}: config.yaml or metrics.json is not a mapping")
    history, note = read_history(run_dir / "history.csv")
    if note is not None:
        print(f"cnnkit: {note}", file=sys.stderr)
    return RunFiles(run_dir, config, metrics, history, note)


def _read(path: Path, parse: Any) -> Any:
    try:
        return parse(path.read_text())
    except (OSError, ValueError, yaml.YAMLError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UnreadableRun(f"{path}: cannot be read ({first})") from None


def read_history(path: Path) -> tuple[list[dict[str, str]], str | None]:
    """(rows, note): history.csv's rows, each with a whole-number epoch and numbers (or blanks)
    in every loss, score and rate column; a file that is not that gives no rows and a one-line
    note naming it. No file (a run stopped before its first epoch) is no rows and no note."""
    if not path.exists():
        return [], None
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            rows = list(reader)
    except (OSError, ValueError, csv.Error) as exc:
        return [], _curves_left_out(path, (str(exc).strip().splitlines() or [repr(exc)])[0])
    if "epoch" not in columns:
        return [], _curves_left_out(path, "no header line with an epoch column")
    for i, row in enumerate(rows, 2):
        try:
            int(row.get("epoch") or "")
            for key, value in row.items():
                if key not in ("epoch", "stage") and value not in (None, ""):
                    float(value)
        except (TypeError, ValueError):
            why = f"line {i}: an epoch number and numbers in every other column but stage expected"
            return [], _curves_left_out(path, why)
    return rows, None


def _curves_left_out(path: Path, why: str) -> str:
    return f"{path}: cannot be read ({why}); its curves are left out"


def recipe(config: dict[str, Any]) -> dict[str, Any]:
    """The settings that made the run: those that differ from TrainConfig's defaults, and the
    few a reader always wants to see."""
    defaults = {f.name: f.default for f in fields(TrainConfig)}
    shown = {}
    for key, value in config.items():
        if key in NOT_RECIPE:
            continue
        if key in ALWAYS_SHOWN or defaults.get(key, object()) != value:
            shown[key] = value
    return shown


def test_score(files: RunFiles) -> float | None:
    value = files.metrics.get(f"test_{files.score_name}")
    return float(value) if isinstance(value, int | float) else None


def images_per_second(files: RunFiles) -> float | None:
    """Training images over training seconds, all epochs together."""
    images = seconds = 0.0
    for row in files.history:
        rate, took = row.get("images_per_second"), row.get("seconds")
        if rate not in (None, "") and took not in (None, ""):
            images += float(rate) * float(took)
            seconds += float(took)
    return images / seconds if seconds > 0 else None


def summary_section(page: Page, files: RunFiles) -> None:
    m, score = files.metrics, files.score_name
    best = m.get(f"best_val_{score}")
    on_test = m.get("validation") == "test"
    items: list[tuple[str, Any]] = [
        ("task", files.task),
        ("model", files.config.get("model")),
        ("parameters", f"{m['parameters']:,}" if "parameters" in m else None),
        ("epochs", f"{m.get('epochs_done', '?')} / {m.get('epochs', '?')}"),
        (
            f"best {'test (chosen on it)' if on_test else 'validation'} {score}",
            _percent(best, score),
        ),
        (
            f"test {score}" + (" without TTA" if m.get("tta") else ""),
            _percent(test_score(files), score),
        ),
        ("training time", f"{m['wall_seconds']:.1f} s" if "wall_seconds" in m else None),
        ("images / s", _rate(images_per_second(files))),
        ("device", f"{m.get('device', '?')} {m.get('precision', '')}".strip()),
    ]
    if m.get("tta"):
        tta = m.get(f"test_{score}_tta")
        items.insert(6, (f"test {score} with TTA ({m['tta']})", _percent(tta, score)))
    section = page.section("Summary").figures((k, v) for k, v in items if v is not None)
    notes = []
    if on_test:
        notes.append(
            "validated on the test split (--val-split 0): best.pt was chosen on these images, "
            "so its test score is not a figure for unseen data"
        )
    if m.get("interrupted"):
        has_best = (files.run_dir / "best.pt").is_file()
        notes.append(
            "the run was interrupted: "
            + ("best.pt holds the best epoch it finished" if has_best else "no epoch finished")
        )
    if m.get("stopped_early"):
        notes.append(f"early stopping ended the run; best.pt holds epoch {m.get('best_epoch')}")
    if m.get("skipped_images"):
        notes.append(f"{m['skipped_images']} unreadable image(s) were skipped")
    for note in notes:
        section.text(note, note=True)
    page.section("Recipe").table(["setting", "value"], recipe(files.config).items())


def curves_section(page: Page, files: RunFiles, tmp: Path) -> None:
    if files.history_note is not None:
        page.section("Training curves").text(files.history_note, note=True)
    if not files.history:
        return
    history = [dict(row) for row in files.history]
    label = "test (no validation split)" if files.metrics.get("validation") == "test" else None
    path = run_folder.plot_history(
        tmp,
        history,
        files.metrics.get("best_epoch"),
        label or "validation",
        files.score_name,
    )
    if path is not None:
        section = page.section("Training curves")
        section.image(path, "training and validation curves")
        section.text(
            "A validation curve that turns up while the training loss keeps falling is "
            "overfitting; the dashed line is the epoch best.pt keeps.",
            note=True,
        )


def export_section(page: Page, files: RunFiles) -> None:
    """The parity table of every export_report.json in the run folder (and one level down)."""
    entries: list[dict[str, Any]] = []
    reports = [files.run_dir / "export_report.json", *files.run_dir.glob("*/export_report.json")]
    for report in sorted(r for r in reports if r.is_file()):
        with contextlib.suppress(OSError, ValueError):
            loaded = json.loads(report.read_text())
            if isinstance(loaded, dict):
                entries += [e for e in loaded.values() if isinstance(e, dict)]
    if not entries:
        return
    rows = []
    for e in entries:
        parity = e.get("parity") or {}
        agreement = [
            f"{k.replace('_', ' ')} {v:.1%}"
            for k, v in parity.items()
            if isinstance(v, float) and (k.endswith("agreement") or k == "matched_boxes")
        ]
        error = parity.get("relative_error")
        rows.append(
            [
                e.get("file"),
                e.get("format"),
                e.get("batch") or "dynamic",
                parity.get("images"),
                f"{error:.2e}" if isinstance(error, float) else error,
                ", ".join(agreement),
                "yes" if parity.get("passed") else "no (refused)",
            ]
        )
    page.section("Export parity").table(
        ["file", "format", "batch", "images", "relative error", "agreement", "kept"], rows
    ).text(
        "Each exported file is checked against best.pt on real images before it is kept.",
        note=True,
    )


def percent(value: Any, score: str) -> str | None:
    return _percent(value, score)


def _percent(value: Any, score: str) -> str | None:
    if not isinstance(value, int | float):
        return None
    return f"{value:.2%}" if score in ("accuracy", "pair_accuracy") else f"{value:.4f}"


def _rate(value: float | None) -> str | None:
    return None if value is None else f"{value:,.0f}"


def test_evaluation(
    page: Page, predictor: Any, data: str | os.PathLike, tmp: Path, **options: Any
) -> tuple[Any, Any, Any]:
    """(the images, the task's report, its page section): best.pt evaluated through the
    predictor's own `evaluate` on the run's test split (its validation split where there is
    none), the plots written to tmp/eval."""
    images, split = predictor.split_images(data, "test", progress=False)
    report = predictor.evaluate(images, out_dir=tmp / "eval", progress=False, **options)
    section = page.section(f"Test evaluation ({split} split, {len(images):,} images)")
    return images, report, section


def fixed(value: float | None, digits: int = 4) -> str:
    """A metric for a table: fixed decimals, '-' where there is none."""
    return "-" if value is None else f"{value:.{digits}f}"


def augmented_batch_section(
    page: Page,
    files: RunFiles,
    data: str | os.PathLike,
    tmp: Path,
    show: Callable[..., Any],
    targets: str,
) -> None:
    """ "An augmented batch": 8 training images as the task's show-batch draws them (a
    detector's with boxes, a segmenter's with masks); a failure is noted on the page."""
    cfg = TrainConfig.from_dict({**files.config, "data": str(data)}, source="config.yaml")
    section = page.section("An augmented batch")
    try:
        # the training data is read again to draw it: what its reader notes (skipped files,
        # how masks were read) was said when the run trained, and the evaluation says it too
        with contextlib.redirect_stdout(io.StringIO()):
            shown = show(cfg, n=8, out=tmp / "batch.png")
    except CnnkitError as exc:
        section.text(f"not drawn: {exc}", note=True)
        return
    section.image(shown.path, f"augmented training images with their {targets}").text(
        f"Training images as the model sees them ({shown.augmentation}), {targets} moved with "
        "the pixels.",
        note=True,
    )
