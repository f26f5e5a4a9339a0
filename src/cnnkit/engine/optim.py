"""Optimiser and learning-rate schedule registries (name -> builder)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch

from cnnkit.config import TrainConfig
from cnnkit.engine.muon import Muon
from cnnkit.errors import did_you_mean

OptimizerBuilder = Callable[[list, TrainConfig], torch.optim.Optimizer]


def _adam(params: list, cfg: TrainConfig) -> torch.optim.Optimizer:
    # Classic (coupled) L2 weight decay, as Keras's and torch's Adam apply it.
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **_fused(params))


def _adamw(params: list, cfg: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **_fused(params))


def _sgd(params: list, cfg: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        params,
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=cfg.nesterov and cfg.momentum > 0,
        weight_decay=cfg.weight_decay,
        # Not fused on CUDA: fused SGD under fp16's GradScaler leaves the momentum buffers it
        # creates uninitialised when the first step overflows and is skipped.
        **_fused(params, cuda=False),
    )


# airbench94_muon's: 3 Newton-Schulz steps are enough for CNN filters, and cheaper than 5
MUON_NS_STEPS = 3


def _muon(params: list, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Muon for 2-D convolution filters (4 dimensions), held at norm sqrt(out_channels), at
    ``muon_lr`` and ``muon_momentum``; SGD with ``lr``, ``momentum`` and ``weight_decay`` for
    everything else. A group's learning rate relative to ``lr`` (discriminative fine-tuning)
    scales its Muon rate alike."""
    muon_groups, sgd_groups = [], []
    bare = [p for p in params if not isinstance(p, dict)]  # plain tensors: one group
    groups = [g for g in params if isinstance(g, dict)] + ([{"params": bare}] if bare else [])
    for group in groups:
        scale = group.get("lr", cfg.lr) / cfg.lr
        # (out, in, kh, kw) tensors only: not 3-D tokens or position embeddings, say
        filters = [p for p in group["params"] if p.ndim == 4]
        others = [p for p in group["params"] if p.ndim != 4]
        rest = {k: v for k, v in group.items() if k not in ("params", "lr")}
        if filters:
            muon_groups.append(
                {
                    **rest,
                    "params": filters,
                    "lr": cfg.muon_lr * scale,
                    "momentum": cfg.muon_momentum,
                    "weight_decay": 0.0,  # the norm is held fixed instead
                    "normalize": True,
                    "muon": True,
                }
            )
        if others:
            sgd_groups.append({**rest, "params": others, "lr": cfg.lr * scale, "muon": False})
    # the SGD groups last: for a model trained from scratch the trainer logs the last group's
    # rate, which is then --lr's
    return Muon(
        muon_groups + sgd_groups,
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=cfg.nesterov,
        weight_decay=cfg.weight_decay,
        ns_steps=MUON_NS_STEPS,
    )


OPTIMIZERS: dict[str, OptimizerBuilder] = {
    "adam": _adam,
    "adamw": _adamw,
    "sgd": _sgd,
    "muon": _muon,
}


def _fused(params: list, cuda: bool = True) -> dict[str, bool]:
    """`fused=True` (the whole update in one kernel) where every parameter is a floating-point
    CPU tensor, or CUDA tensor when `cuda`: on the 2-core CPU Adam's update for simple_cnn took
    0.12 ms fused against 0.49 ms in torch's default for-loop (bench/step_speed.py
    --optimizer-step)."""
    tensors = [t for item in params for t in (item["params"] if isinstance(item, dict) else [item])]
    kinds = {t.device.type for t in tensors}
    allowed = ({"cpu"}, {"cuda"}) if cuda else ({"cpu"},)
    if kinds in allowed and all(t.is_floating_point() for t in tensors):
        return {"fused": True}
    return {}


def _as_list(params: torch.Tensor | Iterable) -> list:
    return [params] if isinstance(params, torch.Tensor) else list(params)


def build_optimizer(params: Iterable, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The configured optimiser over parameters or parameter groups (dicts with "params")."""
    if cfg.optimizer not in OPTIMIZERS:
        raise did_you_mean("optimizer", cfg.optimizer, OPTIMIZERS)
    groups = [
        {**item, "params": _as_list(item["params"])} if isinstance(item, dict) else item
        for item in params
    ]
    return OPTIMIZERS[cfg.optimizer](groups, cfg)


def _constant(step: int, total: int) -> float:
    return 1.0


def _cosine(step: int, total: int) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / max(total, 1)))


def _onecycle(step: int, total: int) -> float:
    """Linear warm-up over the first 30% to the peak, then cosine down to 1/1000 of it."""
    peak = max(1, int(0.3 * total))
    if step < peak:
        return 0.04 + 0.96 * step / peak
    progress = (step - peak) / max(total - peak, 1)
    return 1e-3 + (1 - 1e-3) * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def _triangle(step: int, total: int) -> float:
    """airbench94's: linear from 0.2 of the peak to the peak at 23% of the steps, then linear
    down to 0.07 of it at the end."""
    peak = max(1, int(0.23 * total))
    if step < peak:
        return 0.2 + 0.8 * step / peak
    progress = min((step - peak) / max(total - peak, 1), 1.0)
    return 1.0 - 0.93 * progress


def _linear(step: int, total: int) -> float:
    """airbench94_muon's: straight down from the peak to zero at the end."""
    return max(0.0, 1.0 - step / max(total, 1))


SCHEDULES: dict[str, Callable[[int, int], float]] = {
    "constant": _constant,
    "linear": _linear,
    "cosine": _cosine,
    "onecycle": _onecycle,
    "triangle": _triangle,
}


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    cfg: TrainConfig,
    steps_per_epoch: int,
    epochs: int | None = None,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step LambdaLR over `epochs` (default cfg.epochs), after an optional warm-up."""
    if cfg.schedule not in SCHEDULES:
        raise did_you_mean("schedule", cfg.schedule, SCHEDULES)
    shape = SCHEDULES[cfg.schedule]
    total = (epochs or cfg.epochs) * steps_per_epoch
    warmup = int(cfg.warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return shape(step - warmup, total - warmup)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
