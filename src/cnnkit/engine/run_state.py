"""What last.pt and best.pt hold of a run, and how a Trainer returns to it: the checkpoint
fields, every optimisation's state, the random states (every rank's under torchrun), the epoch's
progress and history; `restore` continues exactly where last.pt stopped.

A mixin of the Trainer (cnnkit.engine.fit), which owns the attributes these methods read.
"""

from __future__ import annotations

from typing import Any

import torch

from cnnkit.engine import distributed
from cnnkit.engine.checkpoint import save_checkpoint, unwrap_model
from cnnkit.engine.ema import ModelEMA
from cnnkit.engine.loop import EpochProgress
from cnnkit.errors import CnnkitError

MAIN = "model"  # the one optimisation's name for a task that trains one network


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _rescale_schedule(scheduler: Any, saved_world: int, world: int) -> None:
    """A per-step LambdaLR saved at a step count of ``saved_world`` processes, moved to the
    same number of images at ``world`` processes' steps, its learning rates set anew."""
    scheduler.last_epoch = scheduler.last_epoch * saved_world // world
    for group, base, factor in zip(
        scheduler.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas, strict=True
    ):
        group["lr"] = base * factor(scheduler.last_epoch)
    scheduler._last_lr = [group["lr"] for group in scheduler.optimizer.param_groups]


# what a resumed run takes from its config rather than from last.pt: the optimiser's
# hyperparameters (a resume may give --lr, --weight-decay, a preset); last.pt keeps the state
# (momentum buffers, step counts) and the schedule's position
SETTINGS = ("initial_lr", "weight_decay", "momentum", "dampening", "nesterov", "betas", "eps")


def _take_settings(opt: Any, fresh: list[dict[str, Any]]) -> None:
    """After loading last.pt, the settings of ``fresh`` (the groups as this run's config built
    them) in each group, and the learning rates the schedule gives at its saved step from this
    run's base rates: unchanged values give the saved rates to the bit."""
    groups = opt.optimizer.param_groups
    if len(groups) != len(fresh):
        return
    for group, new in zip(groups, fresh, strict=True):
        for key in SETTINGS:
            if key in new:
                group[key] = new[key]
    scheduler = opt.scheduler
    if hasattr(scheduler, "lr_lambdas") and all("initial_lr" in g for g in fresh):
        scheduler.base_lrs = [g["initial_lr"] for g in fresh]
        for group, base, factor in zip(
            groups, scheduler.base_lrs, scheduler.lr_lambdas, strict=True
        ):
            group["lr"] = base * factor(scheduler.last_epoch)
        scheduler._last_lr = [group["lr"] for group in groups]


class RunState:
    """The Trainer's checkpoints: best.pt (the chosen weights) and last.pt (everything to
    resume)."""

    # set by the Trainer
    cfg: Any
    task: Any
    model: Any
    ema: Any
    lookahead: Any
    early: Any
    optimizations: dict[str, Any]
    generator: torch.Generator
    progress: EpochProgress
    history: list[dict[str, Any]]
    best_score: float | None
    best_epoch: int
    epoch: int
    stage_index: int
    wall_seconds: float
    stopped_early: bool
    world: int
    main: bool
    run_dir: Any
    data_location: str
    single: bool  # (properties and methods of the Trainer)
    init_seconds: float
    enter_stage: Any

    def _optimization_states(self) -> dict[str, Any]:
        """last.pt's optimizer / scheduler / scaler: one state each, or {name: state} each."""
        states: dict[str, Any] = {"optimizer": {}, "scheduler": {}, "scaler": {}}
        for name, opt in self.optimizations.items():
            states["optimizer"][name] = opt.optimizer.state_dict()
            states["scheduler"][name] = opt.scheduler.state_dict()
            states["scaler"][name] = opt.scaler.state_dict()
        if self.single:
            return {key: value[MAIN] for key, value in states.items()}
        return states

    def _restore_optimizations(self, ckpt: dict[str, Any]) -> None:
        for name, opt in self.optimizations.items():
            saved = ckpt["optimizer"] if self.single else ckpt["optimizer"].get(name)
            if saved is None:
                raise CnnkitError(f"last.pt holds no optimiser state for '{name}'; cannot resume")
            for group in saved["param_groups"]:  # the update implementation is this run's
                for key in ("fused", "foreach"):  # choice, not the saved one (which may
                    if key in opt.optimizer.defaults:  # predate it); set before loading,
                        group[key] = opt.optimizer.defaults[key]  # which places state by it
            fresh = [dict(group) for group in opt.optimizer.param_groups]  # this run's config
            opt.optimizer.load_state_dict(saved)
            for key, target in (("scheduler", opt.scheduler), ("scaler", opt.scaler)):
                target.load_state_dict(ckpt[key] if self.single else ckpt[key][name])
            _take_settings(opt, fresh)

    def best_metrics(self) -> dict[str, Any]:
        """How best.pt was chosen: by the validation score, or (no validation images) as the
        latest epoch; `best_val_<score>` is None then, never a training figure."""
        name = self.task.score_name
        return {
            f"best_val_{name}": self.best_score,
            "best_epoch": self.best_epoch,
            "best_by": f"val_{name}" if self.best_score is not None else "last epoch",
        }

    def checkpoint_fields(self, averaged: bool = False) -> dict[str, Any]:
        """The checkpoint's contract fields; `averaged`: the EMA weights (what best.pt holds)."""
        source = self.ema.module if averaged and self.ema is not None else self.model
        return {
            "task": self.task.name,
            **self.task.checkpoint_fields(),
            "state_dict": unwrap_model(source).state_dict(),
            "config": self.cfg.to_dict(),
            "data_location": self.data_location,
            "epoch": self.epoch,
            "metrics": self.best_metrics(),
        }

    def save_best(self) -> None:
        if self.main:
            save_checkpoint(self.run_dir / "best.pt", **self.checkpoint_fields(averaged=True))

    def save_last(self) -> None:
        """last.pt, by rank 0, with every rank's random state (all ranks call this)."""
        rng = distributed.gather(_rng_state())
        if not self.main:
            distributed.barrier()
            return
        save_checkpoint(
            self.run_dir / "last.pt",
            **self.checkpoint_fields(),
            stage=self.stage_index,
            **self._optimization_states(),
            rng=rng[0],
            rng_ranks=rng if self.world > 1 else None,
            world_size=self.world,
            generator=self.generator.get_state(),
            progress=self.progress.to_dict(),
            history=self.history,
            best=[self.best_score, self.best_epoch],
            wall_seconds=self.wall_seconds,
            init_seconds=self.init_seconds,
            ema=self.ema.state_dict() if self.ema is not None else None,
            lookahead=self.lookahead.state_dict() if self.lookahead is not None else None,
            early_stopping=self.early.state_dict() if self.early is not None else None,
            stopped_early=self.stopped_early,
        )
        distributed.barrier()  # no rank leaves a stopped run while rank 0 is still writing

    def restore(self, ckpt: dict[str, Any]) -> None:
        """Continue exactly where last.pt stopped: weights, stage, optimiser, schedule, RNG."""
        unwrap_model(self.model).load_state_dict(ckpt["state_dict"])
        self.enter_stage(ckpt.get("stage", 0))
        self._restore_optimizations(ckpt)
        ranks = ckpt.get("rng_ranks") or []
        same_world = len(ranks) == self.world
        _set_rng_state(ranks[distributed.rank()] if same_world else ckpt["rng"])
        self.generator.set_state(ckpt["generator"])
        self.progress = EpochProgress.from_dict(ckpt["progress"])
        saved_world = int(ckpt.get("world_size") or 1)
        if saved_world != self.world:
            # its steps were of saved_world x batch images: go on after as many images (a
            # partial step is done again rather than skipped), the schedule too
            self.progress.step = self.progress.step * saved_world // self.world
            for opt in self.optimizations.values():
                _rescale_schedule(opt.scheduler, saved_world, self.world)
        if not self.main:  # the saved totals are every rank's: rank 0 carries them on
            self.progress.sums = dict.fromkeys(self.progress.sums, 0.0)
            self.progress.seen = 0
        self.history = list(ckpt["history"])
        self.best_score, self.best_epoch = ckpt["best"]
        if self.best_score is not None and self.best_score < 0:  # format 1: -1 meant none yet
            self.best_score = None
        self.epoch = ckpt["epoch"]
        self.wall_seconds = ckpt.get("wall_seconds", 0.0)
        self.task.init_seconds = ckpt.get("init_seconds", 0.0)
        if self.ema is not None:
            if ckpt.get("ema"):
                self.ema.load_state_dict(ckpt["ema"])
            else:  # EMA switched on at resume: start averaging from the restored weights
                self.ema = ModelEMA(self.model, self.cfg.ema)
        if self.lookahead is not None:  # not started yet (or switched on at resume): None/{}
            self.lookahead.load_state_dict(ckpt.get("lookahead") or {}, self.model)
        if self.early is not None and ckpt.get("early_stopping"):
            self.early.load_state_dict(ckpt["early_stopping"])
