"""Transfer-learning stages (head only, then fine-tuning), for any task's model.

A run is a list of stages; each sets which backbone blocks train and builds its own optimiser
and schedule. Like fastai's fine_tune: `--finetune` trains the new head for `head_epochs` with
the backbone frozen, then unfreezes (the last N blocks, or all) at lower, per-block learning
rates for `epochs` more.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from cnnkit.config import TrainConfig


@dataclass(frozen=True)
class Stage:
    """A stretch of epochs with one set of trainable parameters."""

    name: str  # "train" | "head" | "finetune"
    epochs: int
    trainable_blocks: int | str | None  # None: a plain model, all trainable; 0: head only
    lr: float
    backbone_lr_ratio: float = 0.1

    @property
    def head_only(self) -> bool:
        return self.trainable_blocks == 0


def parse_unfreeze(value: str | int | None) -> int | str | None:
    if value is None:
        return None
    text = str(value).strip().lower()
    return "all" if text == "all" else int(text)


def is_staged(model: nn.Module) -> bool:
    """A model with a backbone in blocks that can be frozen and given their own rates
    (TransferModel, the detectors): it has `freeze(blocks)` and `param_groups(lr, ratio)`."""
    return callable(getattr(model, "freeze", None)) and callable(
        getattr(model, "param_groups", None)
    )


def plan_stages(cfg: TrainConfig, model: nn.Module) -> list[Stage]:
    """The stages a config asks for; a pretrained backbone is frozen unless told otherwise."""
    if not is_staged(model):
        return [Stage("train", cfg.epochs, None, cfg.lr)]
    unfreeze = parse_unfreeze(cfg.unfreeze)
    if cfg.finetune:
        return [
            Stage("head", cfg.head_epochs, 0, cfg.lr),
            Stage("finetune", cfg.epochs, unfreeze or "all", cfg.lr / 2, cfg.backbone_lr_ratio),
        ]
    # a detector's backbone trains its last few stages by default (torchvision's habit)
    default = getattr(model, "default_trainable_blocks", None)
    if cfg.freeze or (unfreeze is None and cfg.starts_pretrained and default is None):
        return [Stage("head", cfg.epochs, 0, cfg.lr)]
    blocks = unfreeze if unfreeze is not None else (default or "all")
    return [Stage("train", cfg.epochs, blocks, cfg.lr, cfg.backbone_lr_ratio)]


def stage_at(stages: list[Stage], epoch: int) -> tuple[int, Stage, int]:
    """(index, stage, first epoch of that stage) for a 0-based global epoch."""
    start = 0
    for i, stage in enumerate(stages):
        if epoch < start + stage.epochs:
            return i, stage, start
        start += stage.epochs
    return len(stages) - 1, stages[-1], start - stages[-1].epochs


def apply_stage(model: nn.Module, stage: Stage) -> list[dict[str, Any]]:
    """Freeze/unfreeze for the stage; the optimiser's parameter groups (discriminative LRs)."""
    if is_staged(model):
        model.freeze(stage.trainable_blocks if stage.trainable_blocks is not None else "all")
        return model.param_groups(stage.lr, stage.backbone_lr_ratio)
    return [{"params": [p for p in model.parameters() if p.requires_grad], "lr": stage.lr}]
