"""The learning-rate range test (Smith 2015; fastai's lr_find): raise the rate exponentially
over a short run, record the loss, and suggest a rate a little below where it is lowest."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from cnnkit.config import TrainConfig
from cnnkit.engine.fit import Trainer
from cnnkit.engine.loop import EpochProgress, Optimization, run_epoch
from cnnkit.errors import CnnkitError


@dataclass
class LrFindResult:
    lrs: list[float]
    losses: list[float]  # smoothed
    suggestion: float
    plot: Path | None


def suggest_lr(lrs: list[float], losses: list[float]) -> float:
    """A tenth of the rate with the lowest smoothed loss (never past the divergence point)."""
    best = min(range(len(losses)), key=losses.__getitem__)
    return lrs[best] / 10


def range_test_schedule(
    optimizer: torch.optim.Optimizer, factor: Callable[[int], float]
) -> torch.optim.lr_scheduler.LambdaLR:
    """Every group's rate times factor(step), except Muon's filter groups (``--optimizer
    muon``), which stay at ``--muon-lr``: the test sweeps ``--lr`` alone."""
    factors = [
        (lambda step: 1.0) if group.get("muon") else factor for group in optimizer.param_groups
    ]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factors)


def lr_find(
    cfg: TrainConfig,
    out_dir: str | Path = "runs/lr-find",
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    steps: int = 100,
    progress: bool = True,
) -> LrFindResult:
    """Run the range test on the config's data and model; nothing is saved but the plot/CSV."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(cfg, out_dir, progress)
    trainer.enter_stage(0)
    if not trainer.single:
        names = " and ".join(trainer.optimizations)
        raise CnnkitError(
            f"lr-find tests one optimiser's rate; this model trains {names} in turn (a GAN)"
        )
    module = trainer.trained_module()
    steps = max(10, min(steps, 10 * trainer.steps))
    scale = start_lr / cfg.lr  # every parameter group keeps its ratio to the head's rate

    def factor(step: int) -> float:
        return scale * (end_lr / start_lr) ** (min(step, steps) / steps)

    scheduler = range_test_schedule(trainer.optimizer, factor)
    opt = Optimization(trainer.optimizer, scheduler, trainer.scaler, trainer.precision)
    lrs: list[float] = []
    losses: list[float] = []
    state = {"avg": 0.0, "last_sum": 0.0, "last_seen": 0, "stop": False}

    def record(p: EpochProgress) -> None:
        loss = (p.loss_sum - state["last_sum"]) / max(p.seen - state["last_seen"], 1)
        state["last_sum"], state["last_seen"] = p.loss_sum, p.seen
        state["avg"] = 0.98 * state["avg"] + 0.02 * loss
        smoothed = state["avg"] / (1 - 0.98 ** (len(losses) + 1))
        lrs.append(cfg.lr * factor(len(lrs)))
        losses.append(smoothed)
        if not math.isfinite(smoothed) or smoothed > 4 * min(losses) or len(lrs) >= steps:
            state["stop"] = True

    while not state["stop"]:
        state["last_sum"], state["last_seen"] = 0.0, 0
        progress = EpochProgress()
        step, make_batches = trainer.task.epoch(module, 0, progress)
        run_epoch(
            step,
            make_batches,
            opt,
            trainer.generator,
            progress,
            trainer.device,
            should_stop=lambda: state["stop"],
            on_step=record,
            sync_every=1,  # the range test needs every step's loss, on any device
        )
    suggestion = suggest_lr(lrs, losses)
    (out_dir / "lr_find.csv").write_text(
        "lr,smoothed_loss\n"
        + "".join(f"{a:.6g},{b:.6g}\n" for a, b in zip(lrs, losses, strict=True))
    )
    return LrFindResult(lrs, losses, suggestion, _plot(lrs, losses, suggestion, out_dir))


def _plot(lrs: list[float], losses: list[float], suggestion: float, out_dir: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(lrs, losses)
    ax.axvline(suggestion, color="red", linestyle="--", label=f"suggested {suggestion:.2g}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss (smoothed)")
    finite = [v for v in losses if math.isfinite(v)]
    if finite:
        ax.set_ylim(min(finite) * 0.9, min(max(finite), 3 * min(finite)) * 1.1)
    ax.legend()
    fig.tight_layout()
    path = out_dir / "lr_find.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
