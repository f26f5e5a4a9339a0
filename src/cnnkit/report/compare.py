"""compare.html: runs side by side (model, parameters, the settings that differ, best
validation and test scores, time, images/s) with their validation curves overlaid."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cnnkit.errors import CnnkitError
from cnnkit.report.page import Page, figure_png
from cnnkit.report.run import NOT_RECIPE, RunFiles, images_per_second, read_run, test_score


def expand_runs(paths: list[str | os.PathLike]) -> list[Path]:
    """Run folders as given; a folder that is not a run but holds runs (a sweep's, a project's)
    stands for the runs in it, in name order."""
    found: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir() and not (path / "config.yaml").is_file():
            inside = sorted(p for p in path.iterdir() if (p / "config.yaml").is_file())
            if not inside:
                raise CnnkitError(f"{path} is neither a run folder nor a folder of runs")
            found += inside
        else:
            found.append(path)
    return found


def differing_settings(runs: list[RunFiles]) -> dict[str, list[Any]]:
    """The config keys whose values are not the same in every run (what the comparison is
    about), each with its value per run."""
    keys: dict[str, None] = {}
    for run in runs:
        keys.update(dict.fromkeys(run.config))
    out = {}
    for key in keys:
        if key in NOT_RECIPE:
            continue
        values = [run.config.get(key) for run in runs]
        if any(v != values[0] for v in values[1:]):
            out[key] = values
    return out


def compare_runs(runs: list[str | os.PathLike], out: str | os.PathLike = "compare.html") -> Path:
    """Write compare.html for the runs (run folders, or folders of runs) and return its path."""
    found = [read_run(p) for p in expand_runs(list(runs))]
    if len(found) < 2:
        raise CnnkitError("give at least two runs to compare (or a folder holding them)")
    tasks = sorted({r.task for r in found})
    if len(tasks) > 1:
        raise CnnkitError(f"compare runs of one task; these are {' and '.join(tasks)} runs")
    path = Path(out)
    if path.suffix.lower() not in (".html", ".htm"):
        raise CnnkitError(f"--out must end in .html, not {path.name}")
    if not path.parent.is_dir():
        raise CnnkitError(f"cannot write {path}: folder {path.parent} does not exist")
    names = _names(found)
    score = found[0].score_name
    page = Page(
        f"cnnkit: {len(found)} runs compared", f"{tasks[0]} runs, ranked by validation {score}"
    )
    rows = []
    for name, run in zip(names, found, strict=True):
        m = run.metrics
        rate = images_per_second(run)
        rows.append(
            [
                name,
                run.config.get("model"),
                f"{m['parameters']:,}" if "parameters" in m else "",
                _score(m.get(f"best_val_{score}")),
                _score(test_score(run)),
                m.get("epochs_done", ""),
                f"{m['wall_seconds']:.1f}" if "wall_seconds" in m else "",
                f"{rate:,.0f}" if rate else "",
            ]
        )
    rows.sort(key=lambda r: -float(r[3]) if r[3] else float("inf"))
    page.section("Runs").table(
        [
            "run",
            "model",
            "parameters",
            f"best val {score}",
            f"test {score}",
            "epochs",
            "seconds",
            "images/s",
        ],
        rows,
    )
    settings = differing_settings(found)
    section = page.section("Settings that differ")
    if settings:
        section.table(["setting", *names], [[k, *v] for k, v in settings.items()])
    else:
        section.text("the runs' settings are the same (they differ by chance alone)", note=True)
    page.section("Validation curves").image(_curves(found, names, score), "validation curves")
    return page.write(path)


def _names(runs: list[RunFiles]) -> list[str]:
    """Each run's folder name, with its parent's where two share a name."""
    plain = [r.run_dir.resolve().name for r in runs]
    if len(set(plain)) == len(plain):
        return plain
    return [f"{r.run_dir.resolve().parent.name}/{r.run_dir.resolve().name}" for r in runs]


def _score(value: Any) -> str:
    return f"{float(value):.4f}" if isinstance(value, int | float) else ""


def _curves(runs: list[RunFiles], names: list[str], score: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_score) = plt.subplots(1, 2, figsize=(11, 4))
    for name, run in zip(names, runs, strict=True):
        epochs = [int(row["epoch"]) for row in run.history]
        for ax, key in ((ax_loss, "val_loss"), (ax_score, f"val_{score}")):
            values = [row.get(key) for row in run.history]
            if any(v not in (None, "") for v in values):
                shown = [float(v) if v not in (None, "") else float("nan") for v in values]
                ax.plot(epochs, shown, "o-", label=name, markersize=3)
    from matplotlib.ticker import MaxNLocator

    for ax, title in ((ax_loss, "validation loss"), (ax_score, f"validation {score}")):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    return figure_png(fig)
