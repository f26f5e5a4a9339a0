"""compare.html: runs side by side (model, parameters, the settings that differ, best
validation and test scores, time, images/s) with their validation curves overlaid."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnkit.errors import CnnkitError
from cnnkit.report.page import Page, figure_png
from cnnkit.report.run import (
    NOT_RECIPE,
    RunFiles,
    UnreadableRun,
    images_per_second,
    percent,
    read_run,
    test_score,
)


@dataclass
class FoundRuns:
    """The runs a comparison is given: those read, and the run folders left out with why."""

    runs: list[RunFiles] = field(default_factory=list)
    left_out: list[tuple[Path, str]] = field(default_factory=list)


def expand_runs(paths: list[str | os.PathLike]) -> FoundRuns:
    """The runs as given; a folder that is not a run but holds runs (a sweep's, a project's)
    stands for the runs in it, in name order. A run folder whose records cannot be read is
    named on stderr in one line and left out. The same run given twice counts once."""
    found = FoundRuns()
    seen: set[Path] = set()
    for given in paths:
        path = Path(given)
        if path.is_dir() and not (path / "config.yaml").is_file():
            inside = sorted(p for p in path.iterdir() if (p / "config.yaml").is_file())
            if not inside:
                raise CnnkitError(f"{path} is neither a run folder nor a folder of runs")
        else:
            inside = [path]
        for run in inside:
            try:
                files = read_run(run)
            except UnreadableRun as exc:
                if run.resolve() not in seen:
                    seen.add(run.resolve())
                    print(f"cnnkit: left out {run}: {exc}", file=sys.stderr)
                    found.left_out.append((run, str(exc)))
                continue
            if files.run_dir.resolve() not in seen:
                seen.add(files.run_dir.resolve())
                found.runs.append(files)
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
    """Write compare.html for the runs (run folders, or folders of runs) and return its path.
    Runs of several tasks are grouped by task: one comparison each, on that task's score."""
    if isinstance(runs, str | os.PathLike):
        runs = [runs]
    return write_comparison(expand_runs(list(runs)), out)


def write_comparison(given: FoundRuns, out: str | os.PathLike = "compare.html") -> Path:
    """compare.html for the runs read (those left out are listed), and its path."""
    found = given.runs
    if len(found) + len(given.left_out) < 2:
        raise CnnkitError("give at least two different runs to compare (or a folder of them)")
    if not found:
        raise CnnkitError("no run to compare: none of those given can be read (named above)")
    if len(found) < 2:
        raise CnnkitError(
            f"nothing to compare {found[0].run_dir} with: the other runs given cannot be read "
            "(named above)"
        )
    path = Path(out)
    if path.suffix.lower() not in (".html", ".htm"):
        raise CnnkitError(f"--out must end in .html, not {path.name}")
    if not path.parent.is_dir():
        raise CnnkitError(f"cannot write {path}: folder {path.parent} does not exist")
    names = dict(zip((id(run) for run in found), _names(found), strict=True))
    groups = by_task(found)
    if len(groups) == 1:
        ((label, group),) = groups.items()
        subtitle = f"{label} runs, ranked by validation {group[0].score_name}"
    else:
        counts = ", ".join(f"{len(group)} {label}" for label, group in groups.items())
        subtitle = f"runs of {len(groups)} tasks ({counts}), each task compared on its own score"
    page = Page(f"cnnkit: {len(found)} run{'s' * (len(found) != 1)} compared", subtitle)
    for label, group in groups.items():
        _add_comparison(page, group, [names[id(run)] for run in group], label, len(groups) > 1)
    if given.left_out:
        page.section("Runs left out").table(["run", "why"], given.left_out)
    return page.write(path)


def by_task(runs: list[RunFiles]) -> dict[str, list[RunFiles]]:
    """The runs grouped by what they are compared on: their task, and their score where one
    task's runs are scored differently (a multi-label classifier's AUC beside accuracy)."""
    scores: dict[str, set[str]] = {}
    for run in runs:
        scores.setdefault(run.task, set()).add(run.score_name)
    groups: dict[str, list[RunFiles]] = {}
    for run in runs:
        label = run.task if len(scores[run.task]) == 1 else f"{run.task} ({run.score_name})"
        groups.setdefault(label, []).append(run)
    return groups


def _add_comparison(
    page: Page, runs: list[RunFiles], names: list[str], label: str, titled: bool
) -> None:
    """One task's runs side by side: the ranked table, the settings that differ, the curves;
    `titled`: the sections name the task (the page compares several)."""
    score = runs[0].score_name
    lower_is_better = score in LOWER_IS_BETTER
    ranked = sorted(
        zip(names, runs, strict=True),
        key=lambda pair: _rank(pair[1].metrics.get(f"best_val_{score}"), lower_is_better),
    )
    rows = []
    for name, run in ranked:
        m = run.metrics
        rate = images_per_second(run)
        rows.append(
            [
                name,
                run.config.get("model"),
                f"{m['parameters']:,}" if "parameters" in m else "",
                percent(m.get(f"best_val_{score}"), score) or "",
                percent(test_score(run), score) or "",
                m.get("epochs_done", ""),
                f"{m['wall_seconds']:.1f}" if "wall_seconds" in m else "",
                f"{rate:,.0f}" if rate else "",
            ]
        )
    prefix = f"{label}: " if titled else ""
    page.section(f"{label} runs, ranked by validation {score}" if titled else "Runs").table(
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
    section = page.section(f"{prefix}settings that differ" if titled else "Settings that differ")
    settings = differing_settings(runs)
    if len(runs) == 1:
        section.text(f"one {label} run: no other to set its settings against", note=True)
    elif settings:
        section.table(["setting", *names], [[k, *v] for k, v in settings.items()])
    else:
        section.text("the runs' settings are the same (they differ by chance alone)", note=True)
    curves = page.section(f"{prefix}validation curves" if titled else "Validation curves")
    curves.image(_curves(runs, names, score), f"{prefix}validation curves")
    for run in runs:
        if run.history_note is not None:
            curves.text(run.history_note, note=True)


def _names(runs: list[RunFiles]) -> list[str]:
    """Each run's folder name, with its parent's where two share a name."""
    plain = [r.run_dir.resolve().name for r in runs]
    if len(set(plain)) == len(plain):
        return plain
    return [f"{r.run_dir.resolve().parent.name}/{r.run_dir.resolve().name}" for r in runs]


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
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    return figure_png(fig)


LOWER_IS_BETTER = ("fd_lite0",)  # scores where less is better (a GAN's distance)


def _rank(value: float | None, lower_is_better: bool) -> float:
    """A sort key putting the best run first and runs without a score last."""
    if value is None:
        return float("inf")
    return float(value) if lower_is_better else -float(value)
