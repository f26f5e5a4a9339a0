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
import sys
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
# keys that may change between reruns of one sweep: they do not change what a run trains
NOT_RECORDED = ("report", "tensorboard", "device")
# layer specs hold commas: these keys split on ';' (or take a value with ':' whole)
SPEC_KEYS = ("model", "head")


@dataclass
class SweepResult:
    folder: Path
    total: int = 0  # combinations
    runs: list[Path] = field(default_factory=list)  # the run folders of those reached
    finished: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)  # finished before this call
    interrupted: bool = False
    stopped_by: int | None = None
    compare: Path | None = None
    failed: list[tuple[Path, str]] = field(default_factory=list)  # (run folder, why not run)


def _scalar_type(name: str) -> tuple[type, bool]:
    """(the field's scalar type, whether it may be None)."""
    hint = get_type_hints(TrainConfig)[name]
    if get_origin(hint) in (Union, types.UnionType):
        return next(a for a in get_args(hint) if a is not type(None)), True
    return hint, False


def _convert(key: str, text: str) -> Any:
    kind, optional = _scalar_type(key)
    text = text.strip()
    if text.lower() in ("none", "null") and kind is not str:
        if not optional:
            raise CnnkitError(f"--sweep {key}: 'none' is not {_article(kind.__name__)}")
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
        raise CnnkitError(f"--sweep {key}: '{text}' is not {_article(kind.__name__)}") from None


def _article(noun: str) -> str:
    return f"an {noun}" if noun[0] in "aeiou" else f"a {noun}"


def _split_values(key: str, values: str) -> list[str]:
    if ";" in values:
        return values.split(";")
    if key in SPEC_KEYS and ":" in values:  # one layer spec: its commas are its own
        return [values]
    return values.split(",")


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
        converted = [_convert(key, p) for p in _split_values(key, values) if p.strip()]
        if not converted:
            raise CnnkitError(f"--sweep {key} gives no values (KEY=V1,V2)")
        grid[key] = converted
    return check_grid(grid)


def check_grid(grid: dict[str, Any]) -> dict[str, list[Any]]:
    """The grid, keys in a fixed order (the order flags came in does not change the sweep);
    each key a list of distinct values of a setting a sweep may vary."""
    keys = {f.name for f in dataclasses.fields(TrainConfig)}
    out: dict[str, list[Any]] = {}
    for key in sorted(grid):
        values = grid[key]
        if key not in keys:
            raise CnnkitError(f"sweep: {did_you_mean('setting', key, sorted(keys))}")
        if key in FIXED:
            raise CnnkitError(f"a sweep cannot vary {key}")
        if isinstance(values, str | bytes) or not isinstance(values, list | tuple):
            raise CnnkitError(f"sweep {key}: give a list of values, not {values!r}")
        if not values:
            raise CnnkitError(f"sweep {key} gives no values")
        if len(set(map(repr, values))) != len(values):
            raise CnnkitError(f"--sweep {key} repeats a value")
        out[key] = list(values)
    return out


def run_name(index: int, combination: dict[str, Any]) -> str:
    """A run folder's name: its place in the sweep, then its values (file-name safe)."""
    words = "_".join(f"{k}={v}" for k, v in combination.items())
    safe = re.sub(r"[^A-Za-z0-9_.=+-]+", "-", words).strip("-")[:80]
    return f"{index:02d}_{safe}"


def _finished(run_dir: Path) -> bool:
    """metrics.json says the run ended; where it cannot be read, last.pt says whether every
    epoch was trained."""
    import json

    try:
        return not json.loads((run_dir / "metrics.json").read_text()).get("interrupted", True)
    except (OSError, ValueError, AttributeError):
        pass
    last = run_dir / "last.pt"
    if not last.is_file():
        return False
    from cnnkit.engine.checkpoint import load_checkpoint

    try:
        ckpt = load_checkpoint(last)
    except CnnkitError:
        return False
    return int(ckpt.get("epoch", 0)) >= int(ckpt.get("config", {}).get("epochs", 1 << 30))


def _check_data(values: dict[str, Any]) -> None:
    """Data a combination names must exist before the first run trains."""
    from cnnkit.data.datasets import named_dataset

    data = values.get("data")
    if data is None or named_dataset(data) is not None:
        return
    if not Path(str(data)).expanduser().exists():
        raise CnnkitError(f"--sweep data: {data} not found")


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
    from cnnkit.report.compare import compare_runs

    if not grid:
        raise CnnkitError("a sweep needs at least one --sweep KEY=V1,V2")
    grid = check_grid(grid)
    config = config or TrainConfig()
    base = config.to_dict()
    folder = Path(config.project) / (config.name or "sweep-" + "-".join(grid))
    combos = [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]
    for combo in combos:  # every combination is valid before the first one trains
        values = with_overrides(base, combo)
        TrainConfig.from_dict(values, "--sweep")
        _check_data(values)
    kept = {k: v for k, v in base.items() if k not in FIXED and k not in NOT_RECORDED}
    record = {"base": kept, "grid": grid}
    _check_folder(folder, record)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / SWEEP_FILE).write_text(yaml.safe_dump(record, sort_keys=False))
    result = SweepResult(folder, total=len(combos))
    for index, combo in enumerate(combos, 1):
        name = run_name(index, combo)
        run_dir = folder / name
        result.runs.append(run_dir)
        described = ", ".join(f"{k}={v}" for k, v in combo.items())
        if _finished(run_dir):
            print(f"sweep {index}/{len(combos)} ({described}): finished before, skipped")
            result.skipped.append(run_dir)
            result.finished.append(run_dir)
            _report_if_missing(run_dir, config.report)
            continue
        print(f"sweep {index}/{len(combos)}: {described}")
        try:
            run = _train_one(run_dir, {**with_overrides(base, combo), "name": name}, progress)
        except CnnkitError as exc:  # this combination cannot train (a model for another
            # task than the data's, ...): the others still can
            if (run_dir / "best.pt").is_file():
                raise  # it trained, and failed after: no combination to leave out
            print(
                f"cnnkit: sweep {index}/{len(combos)} ({described}) not trained: {exc}",
                file=sys.stderr,
            )
            result.failed.append((run_dir, str(exc)))
            continue
        if run.interrupted:
            result.interrupted, result.stopped_by = True, run.stopped_by
            break
        result.finished.append(run_dir)
    if len(result.finished) >= 2:
        result.compare = compare_runs(result.finished, folder / "compare.html")
    return result


def _train_one(run_dir: Path, values: dict[str, Any], progress: bool) -> Any:
    """One combination's run: resumed from its last.pt, else started afresh."""
    from cnnkit.engine import train

    if (run_dir / "last.pt").is_file():
        return train(resume=run_dir, progress=progress)
    if run_dir.exists():  # a run stopped before its first checkpoint: start it again
        shutil.rmtree(run_dir)
    values = {**values, "project": str(run_dir.parent)}
    return train(TrainConfig.from_dict(values, "--sweep"), progress=progress)


def _report_if_missing(run_dir: Path, wanted: bool) -> None:
    """A run finished before whose report.html was never written (interrupted while it was
    being built) gets it now."""
    if not wanted or (run_dir / "report.html").is_file() or not (run_dir / "best.pt").is_file():
        return
    from cnnkit.report import build_report

    try:
        print(f"report: {build_report(run_dir)}")
    except CnnkitError as exc:
        print(f"cnnkit: report.html not written: {exc}")
