"""airbench's lookahead: the training weights are pulled back to a slow average of themselves.

From ``start`` (a fraction of the run; airbench94: epoch 3 of 9.9, 0.3) the model's weights are
snapshotted, then every ``every`` optimiser steps the slow copy moves toward the current (fast)
weights, ``slow = rho * slow + (1 - rho) * fast``, and the fast weights are reset to it --
Lookahead (Zhang et al. 2019) with an averaging strength that grows through the run,
``rho = decay ** every * progress ** power`` (airbench94: decay 0.95, every 5, power 3): early
training moves freely, the end of the run averages strongly. At the end of each epoch the model
takes the slow weights, so what is evaluated and saved is the average. Parameters and floating
buffers (BatchNorm's running statistics) are averaged, as airbench does.

Unlike ``ModelEMA`` (a separate copy, only evaluated), lookahead changes the weights that train;
the average itself is a ``ModelEMA`` driven with this schedule's decay.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cnnkit.engine.checkpoint import unwrap_model
from cnnkit.engine.ema import ModelEMA, weight_tensors


class Lookahead:
    """Slow weights for `model`; call ``step`` after every optimiser step, ``sync`` at the end
    of each epoch."""

    def __init__(
        self, decay: float = 0.95, every: int = 5, power: float = 3.0, start: float = 0.3
    ) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"lookahead decay must be in [0, 1], got {decay}")
        if every < 1:
            raise ValueError(f"lookahead every must be >= 1, got {every}")
        if not 0.0 <= start <= 1.0:
            raise ValueError(f"lookahead start must be in [0, 1], got {start}")
        self.decay, self.every, self.power = float(decay), int(every), float(power)
        self.start = float(start)
        self._slow: ModelEMA | None = None  # taken at the first pull step from `start`

    @property
    def started(self) -> bool:
        return self._slow is not None

    def rho(self, progress: float) -> float:
        """The decay of one pull at `progress` (0 at the start of the run, 1 at its end)."""
        return self.decay**self.every * min(max(progress, 0.0), 1.0) ** self.power

    def step(self, model: nn.Module, step: int, total_steps: int) -> None:
        """After optimiser step `step` (1-based, counted over the run) of `total_steps`: every
        `every` steps from `start` on, move the slow weights toward the model's and reset the
        model to them (the first such step only takes the snapshot)."""
        progress = step / max(total_steps, 1)
        if step % self.every or progress < self.start:
            return
        if self._slow is None:
            self._slow = ModelEMA(model, self.decay, warmup=False)
            return
        self._slow.update(model, decay=self.rho(progress))
        self.sync(model)

    @torch.no_grad()
    def sync(self, model: nn.Module) -> None:
        """Set the model's parameters and floating buffers to the slow weights (once started)."""
        if self._slow is None:
            return
        for slow, fast in zip(
            weight_tensors(self._slow.module), weight_tensors(unwrap_model(model)), strict=True
        ):
            if fast.is_floating_point():
                fast.copy_(slow)

    def state_dict(self) -> dict[str, Any]:
        """The slow weights (weights_only-safe); empty before the snapshot."""
        return self._slow.state_dict() if self._slow is not None else {}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        """Restore the slow weights saved by `state_dict` for `model` (nothing when empty)."""
        if not state:
            self._slow = None
            return
        self._slow = ModelEMA(model, self.decay, warmup=False)
        self._slow.load_state_dict(state)
