"""Training: the loop, optimisers and schedules, checkpoints, and the run folder.

The public names load lazily, so that `cnnkit.train.loop` and `cnnkit.train.device` (which the
evaluate package uses for inference) can be imported without pulling in the trainer.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "RunResult": "cnnkit.train.trainer",
    "Trainer": "cnnkit.train.trainer",
    "train": "cnnkit.train.trainer",
    "load_checkpoint": "cnnkit.train.checkpoint",
    "save_checkpoint": "cnnkit.train.checkpoint",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'cnnkit.train' has no attribute {name!r}")
