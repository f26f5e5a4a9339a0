"""Where a training run starts: `train(config)` or `train(resume=RUN)`, inside torchrun's process
group when torchrun started the process (cnnkit.engine.distributed), quiet on every rank but 0.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from cnnkit.config import TrainConfig, resume_values, with_overrides
from cnnkit.engine import distributed, run_folder
from cnnkit.engine.checkpoint import load_checkpoint
from cnnkit.engine.device import resolve_device
from cnnkit.engine.fit import RunResult, Trainer
from cnnkit.errors import CnnkitError

DEFAULT_DIST_TIMEOUT = 30.0  # minutes a rank waits for the others (torchrun) before failing


def _resume(run: str | Path, progress: bool, overrides: dict[str, Any]) -> RunResult:
    run_dir = Path(run)
    last = run_dir / "last.pt" if run_dir.is_dir() else run_dir
    if not last.is_file():
        raise CnnkitError(f"nothing to resume: {last} not found")
    ckpt = load_checkpoint(last)
    if "optimizer" not in ckpt:
        raise CnnkitError(f"{last} holds weights only and cannot be resumed")
    if ckpt.get("stopped_early"):
        raise CnnkitError(
            f"run {last.parent} stopped early at epoch {ckpt['epoch']}; its best.pt is final"
        )
    values = resume_values(ckpt["config"], overrides)  # refuses a new model, or data by a preset
    where = ckpt.get("data_location")
    if (
        overrides.get("data") is None
        and where
        and Path(where).is_absolute()
        and Path(where).exists()
    ):
        values["data"] = where  # a run trained on a relative path resumes from any directory
    trainer = Trainer(TrainConfig.from_dict(values), last.parent, progress, resuming=True)
    if list(trainer.data.classes) != list(ckpt["classes"]):
        raise CnnkitError("the data's classes differ from the checkpoint's; cannot resume")
    trained_by = ckpt.get("world_size", 1)
    if trained_by != trainer.world:
        print(
            f"cnnkit: note: {last} was saved by {trained_by} process(es) and resumes in "
            f"{trainer.world}: it goes on with {trainer.cfg.batch_size * trainer.world} images "
            "a step, after as many images of the epoch as were done, not exactly as the "
            "interrupted run would have"
        )
    trainer.restore(ckpt)
    if trainer.epoch >= trainer.total_epochs:
        raise CnnkitError(
            f"run {last.parent} already finished {trainer.epoch} epochs; "
            "pass a larger --epochs to train further"
        )
    print(
        f"cnnkit: resuming {last.parent} at epoch {trainer.epoch + 1}, "
        f"batch {trainer.progress.step}"
    )
    return trainer.fit()


def train(
    config: TrainConfig | None = None,
    *,
    resume: str | Path | None = None,
    progress: bool = True,
    **overrides: Any,
) -> RunResult:
    """Train a model into a run folder; `resume` continues a run folder from its last.pt.

    `cnnkit.train(data="cifar10-sample", model="simple_cnn", epochs=2)` takes the same options as
    `cnnkit train`, as keywords or as a TrainConfig.
    """
    settings = {**(config.to_dict() if config is not None else {}), **overrides}
    if resume is not None and distributed.launched():  # the saved run's device and timeout
        settings = {**_saved_config(resume), **{k: v for k, v in overrides.items() if v}}
    device = resolve_device(settings.get("device") or "auto")
    timeout = settings.get("dist_timeout") or DEFAULT_DIST_TIMEOUT
    with distributed.session(device, timeout), _quiet_unless_main():
        try:
            if resume is not None:
                return _resume(resume, progress, overrides)
            return _train(config, progress, overrides)
        except Exception as exc:
            if distributed.active() and distributed.is_communication_error(exc):
                raise CnnkitError(
                    f"process {distributed.rank()} of {distributed.world_size()} lost contact "
                    f"with the others before training began ({distributed.first_line(exc)})"
                ) from None
            raise


def _saved_config(run: str | Path) -> dict[str, Any]:
    """The config a run folder's last.pt was trained with ({} when there is none to read:
    _resume then says why in one line)."""
    last = Path(run) / "last.pt" if Path(run).is_dir() else Path(run)
    try:
        return dict(load_checkpoint(last).get("config") or {})
    except CnnkitError:
        return {}


def _quiet_unless_main() -> contextlib.AbstractContextManager:
    """Under torchrun only rank 0 prints (errors still reach every rank's stderr)."""
    if distributed.is_main():
        return contextlib.nullcontext()
    return contextlib.redirect_stdout(open(os.devnull, "w"))  # noqa: SIM115 (closed at exit)


def _train(config: TrainConfig | None, progress: bool, overrides: dict[str, Any]) -> RunResult:
    if config is None:
        config = TrainConfig.from_dict(overrides)
    elif overrides:
        config = TrainConfig.from_dict(with_overrides(config.to_dict(), overrides))
    short = config.model if len(config.model) < 40 and "," not in config.model else "custom"
    # under torchrun rank 0 makes the folder and tells the others its name
    run_dir = distributed.decided_by_main(
        lambda: run_folder.new_run_dir(config.project, config.name, Path(short).stem)
    )
    try:
        trainer = Trainer(config, run_dir, progress)
    except BaseException:
        if distributed.is_main() and run_dir.exists() and not any(run_dir.iterdir()):
            run_dir.rmdir()  # a run that never started leaves no empty folder
        raise
    return trainer.fit()
