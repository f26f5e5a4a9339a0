"""The engine (task-blind): the loop, optimisers and schedules, checkpoints, and the run folder.

The public names load lazily, so that `cnnkit.engine.loop` and `cnnkit.engine.device` (which the
tasks use) can be imported without pulling in the trainer.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "RunResult": "cnnkit.engine.fit",
    "Trainer": "cnnkit.engine.fit",
    "train": "cnnkit.engine.start",
    "load_checkpoint": "cnnkit.engine.checkpoint",
    "save_checkpoint": "cnnkit.engine.checkpoint",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'cnnkit.engine' has no attribute {name!r}")
