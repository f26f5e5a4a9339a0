"""Early stopping: end a run once the monitored metric stops improving.

Restoring the best weights is not done here: best.pt already holds them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from cnnkit.errors import CnnkitError, did_you_mean

MODES = ("max", "min")


@dataclass
class EarlyStopping:
    """Stop after `patience` epochs in a row without an improvement greater than `min_delta`.

    `mode` is "max" for a metric that should rise (accuracy), "min" for one that should fall
    (loss). The first value is always an improvement; a NaN never is.
    """

    patience: int
    min_delta: float = 0.0
    mode: str = "max"
    _best: float = field(default=math.nan, init=False, repr=False)
    _best_epoch: int = field(default=0, init=False, repr=False)
    _epochs: int = field(default=0, init=False, repr=False)
    _bad_epochs: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise did_you_mean("early-stopping mode", str(self.mode), MODES)
        if isinstance(self.patience, bool) or not (
            isinstance(self.patience, int) and self.patience >= 1
        ):
            raise CnnkitError(
                f"early-stopping patience must be an integer >= 1, not {self.patience}"
            )
        if not self.min_delta >= 0:
            raise CnnkitError(f"early-stopping min_delta must be >= 0, not {self.min_delta}")
        self.min_delta = float(self.min_delta)
        self._best = -math.inf if self.mode == "max" else math.inf

    @property
    def best(self) -> float:
        """The best value seen (-inf for "max", +inf for "min" before the first step)."""
        return self._best

    @property
    def best_epoch(self) -> int:
        """1-based epoch of the best value (counting step() calls); 0 before the first."""
        return self._best_epoch

    @property
    def epochs_without_improvement(self) -> int:
        return self._bad_epochs

    @property
    def epochs(self) -> int:
        """Epochs recorded so far."""
        return self._epochs

    @property
    def should_stop(self) -> bool:
        return self._bad_epochs >= self.patience

    def is_improvement(self, value: float) -> bool:
        """Whether `value` beats the best by more than min_delta."""
        if self.mode == "max":
            return value > self._best + self.min_delta
        return value < self._best - self.min_delta

    def step(self, value: float) -> bool:
        """Record an epoch's metric; True when training should stop."""
        value = float(value)
        self._epochs += 1
        if self.is_improvement(value):
            self._best, self._best_epoch, self._bad_epochs = value, self._epochs, 0
        else:
            self._bad_epochs += 1
        return self.should_stop

    def state_dict(self) -> dict[str, Any]:
        """Plain numbers and strings (safe for torch.load(weights_only=True))."""
        return {
            "mode": self.mode,
            "best": self._best,
            "best_epoch": self._best_epoch,
            "epochs": self._epochs,
            "epochs_without_improvement": self._bad_epochs,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the counters; patience and min_delta stay as constructed (from the config)."""
        if state["mode"] != self.mode:
            raise CnnkitError(
                f"saved early-stopping state is for mode '{state['mode']}', not '{self.mode}'"
            )
        self._best = float(state["best"])
        self._best_epoch = int(state["best_epoch"])
        self._epochs = int(state["epochs"])
        self._bad_epochs = int(state["epochs_without_improvement"])
