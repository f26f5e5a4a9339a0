"""What kind of value each TrainConfig option takes, checked before any other rule: true or
false for switches, text for names and paths, finite numbers, and whole numbers no larger than
a run could use (TrainConfig.validate calls ``check_kinds`` first)."""

from __future__ import annotations

import math
import os
from dataclasses import fields
from typing import Any

from cnnkit.errors import CnnkitError

# options that must be text (a YAML `model: 5` or `project: [1, 2]` is refused in one line)
TEXT_KEYS = frozenset(
    ("data", "model", "task", "optimizer", "schedule", "augment", "tta", "device", "precision")
    + ("name", "project")
)
# whole numbers past these could not run (a seed over 63 bits, a 100,000-pixel side)
WHOLE_LIMITS = {
    "seed": 2**63 - 1,
    "image_size": 8192,
    "input_size": 8192,
    "test_image_size": 8192,
    "crop_padding": 1024,
    "fpn_channels": 4096,
    "latent_dim": 65536,
    "embedding_dim": 65536,
    "workers": 256,
    "epochs": 1_000_000,
    "batch_size": 1_000_000,
}
NOT_NEGATIVE = ("seed", "crop_padding")


def check_kinds(cfg: Any) -> None:
    """Values of the wrong kind (from a YAML file or Python) and numbers no library takes:
    NaN or infinite floats, whole numbers past what a run could allocate."""
    for item in fields(cfg):
        value, kind = getattr(cfg, item.name), str(item.type)
        if value is None:
            continue
        if kind in ("bool", "bool | None") and not isinstance(value, bool):
            raise CnnkitError(f"{item.name} must be true or false, got {value!r}")
        if item.name in TEXT_KEYS and isinstance(value, os.PathLike):
            value = os.fspath(value)  # a Path from Python: the folder's name
            setattr(cfg, item.name, value)
        if item.name in TEXT_KEYS and not isinstance(value, str):
            raise CnnkitError(f"{item.name} must be text, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise CnnkitError(f"{item.name} must be a finite number, got {value!r}")
        top = WHOLE_LIMITS.get(item.name)
        whole = isinstance(value, int) and not isinstance(value, bool)
        if top is not None and whole and value > top:
            raise CnnkitError(f"{item.name} must be at most {top:,}, got {value:,}")
        if item.name in NOT_NEGATIVE and whole and value < 0:  # (others have their own rule)
            raise CnnkitError(f"{item.name} must not be negative, got {value}")
