"""`cnnkit train --sweep key=v1,v2 ...`: one run per combination of values, in one sweep
folder, compared in its compare.html at the end.

A sweep is resumable by rerunning it: a finished run is skipped, an interrupted one resumed
from its last.pt; Ctrl-C stops the sweep after saving the current run, keeping the others.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import shutil
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml

from cnnkit.config import TrainConfig, with_overrides
from cnnkit.errors import CnnkitError, did_you_mean

SWEEP_FILE = "sweep.yaml"
# keys a sweep may not vary: where runs go, and the switch for resuming
FIXED = ("project", "name", "preset")


@dataclass
class SweepResult:
    folder: Path
    runs: list[Path] = field(default_factory=list)  # every combination's run folder
    finished: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)  # finished before this call
    interrupted: bool = False
    stopped_by: int | None = None
    compare: Path | None = None


def _scalar_type(name: str) -> type:
    hint = get_type_hints(TrainConfig)[name]
    if get_origin(hint) in (Union, types.UnionType):
        hint = next(a for a in get_args(hint) if a is not type(None))
    return hint


def _convert(key: str, text: str) -> Any:
    kind = _scalar_type(key)
    text = text.strip()
    if text.lower() in ("none", "null") and kind is not str:
        return None
    if kind is bool:
        if text.lower() in ("true", "yes", "1", "on"):
            return True
        if text.lower() in ("false", "no", "0", "off"):
            return False
        raise CnnkitError(f"--sweep {key}: '{text}' is not true or false")
    try:
        return kind(text)
    except ValueError:
        raise CnnkitError(f"--sweep {key}: '{text}' is not a {kind.__name__}") from None


def parse_sweep(items: list[str]) -> dict[str, list[Any]]:
    """`key=v1,v2` items -> {key: [v1, v2]} with each value of the key's type; values that hold
    commas (layer specs) are separated by ';' instead."""
    keys = [f.name for f in dataclasses.fields(TrainConfig)]
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not values.strip():
            raise CnnkitError(f"--sweep takes KEY=V1,V2 (e.g. lr=0.001,0.003), not '{item}'")
        if key not in keys:
            raise CnnkitError(f"--sweep: {did_you_mean('setting', key, keys)}")
        if key in FIXED:
            raise CnnkitError(f"--sweep cannot vary {key}")
        if key in grid:
            raise CnnkitError(f"--sweep names {key} twice")
        parts = values.split(";") if ";" in values else values.split(",")
        converted = [_convert(key, p) for p in parts if p.strip()]
        if len(set(map(repr, converted))) != len(converted):
            raise CnnkitError(f"--sweep {key} repeats a value")
        grid[key] = converted
    return grid


def run_name(index: int, combination: dict[str, Any]) -> str:
    """A run folder's name: its place in the sweep, then its values (file-name safe)."""
    words = "_".join(f"{k}={v}" for k, v in combination.items())
    safe = re.sub(r"[^A-Za-z0-9_.=+-]+", "-", words).strip("-")[:80]
    return f"{index:02d}_{safe}"


def _finished(run_dir: Path) -> bool:
    metrics = run_dir / "metrics.json"
    if not metrics.is_file():
        return False
    import json

    try:
        return not json.loads(metrics.read_text()).get("interrupted", True)
    except (OSError, ValueError):
        return False


def _check_folder(folder: Path, record: dict[str, Any]) -> None:
    """A rerun continues its own sweep; another sweep's folder is refused."""
    saved_file = folder / SWEEP_FILE
    if saved_file.is_file():
        saved = yaml.safe_load(saved_file.read_text()) or {}
        if saved != record:
            raise CnnkitError(
                f"{folder} holds another sweep (other settings or values); choose another "
                "--name, or rerun that sweep's own command"
            )
    elif folder.exists() and any(folder.iterdir()):
        raise CnnkitError(f"{folder} exists and is not a sweep folder; choose another --name")


def sweep(
    grid: dict[str, list[Any]], config: TrainConfig | None = None, progress: bool = True
) -> SweepResult:
    """Train one run per combination of ``grid``'s values over ``config`` into
    <project>/<name> (default name: sweep-<keys>), then write compare.html there."""
    from cnnkit.engine import train
    from cnnkit.report.compare import compare_runs

    if not grid:
        raise CnnkitError("a sweep needs at least one --sweep KEY=V1,V2")
    config = config or TrainConfig()
    base = config.to_dict()
    folder = Path(config.project) / (config.name or "sweep-" + "-".join(grid))
    combos = [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]
    for combo in combos:  # every combination is valid before the first one trains
        TrainConfig.from_dict(with_overrides(base, combo), "--sweep")
    record = {"base": {k: v for k, v in base.items() if k not in FIXED}, "grid": grid}
    _check_folder(folder, record)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / SWEEP_FILE).write_text(yaml.safe_dump(record, sort_keys=False))
    result = SweepResult(folder)
    for index, combo in enumerate(combos, 1):
        name = run_name(index, combo)
        run_dir = folder / name
        result.runs.append(run_dir)
        described = ", ".join(f"{k}={v}" for k, v in combo.items())
        if _finished(run_dir):
            print(f"sweep {index}/{len(combos)} ({described}): finished before, skipped")
            result.skipped.append(run_dir)
            result.finished.append(run_dir)
            continue
        print(f"sweep {index}/{len(combos)}: {described}")
        if (run_dir / "last.pt").is_file():
            run = train(resume=run_dir, progress=progress)
        else:
            if run_dir.exists():  # a run stopped before its first checkpoint: start it again
                shutil.rmtree(run_dir)
            values = {**with_overrides(base, combo), "project": str(folder), "name": name}
            run = train(TrainConfig.from_dict(values, "--sweep"), progress=progress)
        if run.interrupted:
            result.interrupted, result.stopped_by = True, run.stopped_by
            break
        result.finished.append(run_dir)
    if len(result.finished) >= 2:
        result.compare = compare_runs(result.finished, folder / "compare.html")
    return result
