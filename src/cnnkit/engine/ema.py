"""An exponential moving average (EMA) of a model's weights, for evaluation.

The average is kept in a copy of the (unwrapped) model and updated after every optimiser step:

    ema = ModelEMA(model, decay=0.999)
    ...optimizer.step()...
    ema.update(model)
    evaluate(ema.module, ...)

Why not ``torch.optim.swa_utils.AveragedModel`` with ``get_ema_multi_avg_fn``: its first
``update_parameters`` call copies the model instead of averaging (so one update from w0 to w1
gives w1, not ``d*w0 + (1-d)*w1``); the multi-avg function has one fixed decay, so the warm-up
would need a custom function reading ``n_averaged`` (a tensor: a host sync per step on a GPU, or
state kept beside it); and with ``use_buffers=True`` it pushes integer buffers through the float
formula and casts back, so BatchNorm's ``num_batches_tracked`` freezes at its first value. The
update below is the same ``torch._foreach_lerp_`` that AveragedModel's EMA function runs, over
parameters and floating-point buffers, grouped by (device, dtype) so each group takes the fused
kernel; integer buffers are copied.

BatchNorm running statistics are averaged like the weights (AveragedModel's ``use_buffers=True``
semantics, as timm does): the model's current running mean/var were measured with the current
weights, which the averaged weights are not; the averaged statistics track the averaged weights
over the same window, and need no extra pass over the data (``update_bn``) before evaluating.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from typing import Any

import torch
from torch import nn

from cnnkit.engine.checkpoint import unwrap_model


class ModelEMA:
    """Exponential moving average of a model's parameters and buffers, for evaluation.

    ``decay`` is the per-update decay d: after an update from the model's weights w,
    ``ema = d * ema + (1 - d) * w``. With ``warmup`` the decay used by the (n+1)-th update
    (n updates done before it) is ``min(decay, (1 + n) / (10 + n))`` -- TensorFlow's
    ``ExponentialMovingAverage(num_updates=...)`` schedule: 0.1 at the first update, 0.5 at the
    9th, 0.9 at the 82nd, reaching 0.999 after about 9,000 -- so the average is not dominated by
    the random initialisation early in training.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.updates = 0  # updates applied so far
        module = copy.deepcopy(unwrap_model(model))
        for p in module.parameters():
            p.grad = None  # deepcopy copies .grad too; the average never needs one
            p.requires_grad_(False)
        self._module = module.eval()

    @property
    def module(self) -> nn.Module:
        """The averaged copy: the model's own class and structure, in eval mode, no grads."""
        return self._module

    def decay_at(self, updates: int) -> float:
        """The decay the update following `updates` earlier updates uses."""
        if not self.warmup:
            return self.decay
        return min(self.decay, (1.0 + updates) / (10.0 + updates))

    @torch.no_grad()
    def update(self, model: nn.Module, decay: float | None = None) -> None:
        """Fold the model's current weights into the average (call after each optimiser step);
        `decay` overrides this update's decay (a caller with its own schedule)."""
        source = unwrap_model(model)
        weight = 1.0 - (self.decay_at(self.updates) if decay is None else float(decay))
        ema_state = weight_tensors(self._module)
        model_state = weight_tensors(source)
        if len(ema_state) != len(model_state):
            raise ValueError(
                f"EMA.update: the model has {len(model_state)} parameters and buffers, the "
                f"average {len(ema_state)}; pass the whole model the EMA was built from"
            )
        groups: dict[tuple[torch.device, torch.dtype], tuple[list, list]] = defaultdict(
            lambda: ([], [])
        )
        for e, m in zip(ema_state, model_state, strict=True):
            if e.is_floating_point():
                ema_list, model_list = groups[(e.device, e.dtype)]
                ema_list.append(e)
                model_list.append(m.detach())
            else:
                e.copy_(m)  # integer buffers (BatchNorm's num_batches_tracked) are counters
        for ema_list, model_list in groups.values():
            torch._foreach_lerp_(ema_list, model_list, weight)
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        """Weights and update count (tensors and plain numbers: weights_only-safe)."""
        return {
            "state_dict": self._module.state_dict(),
            "updates": self.updates,
            "decay": self.decay,
            "warmup": self.warmup,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the average and its update count. `decay` and `warmup` stay as constructed
        (the run's config decides them); the saved values are for information."""
        self._module.load_state_dict(state["state_dict"])
        self.updates = int(state["updates"])


def weight_tensors(module: nn.Module) -> list[torch.Tensor]:
    """Parameters then buffers, in registration order (identical for identical structures)."""
    return [*module.parameters(), *module.buffers()]
