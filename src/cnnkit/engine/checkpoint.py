"""The one checkpoint format: atomic save, safe load (no code runs from the file)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnkit.errors import CnnkitError

FORMAT = "cnnkit-checkpoint"
# 2: records the `task` (and its post-processing settings); a version-1 file is a classifier's
VERSION = 2


def unwrap_model(model: nn.Module) -> nn.Module:
    """Strip torch.compile and DDP/DataParallel wrappers so checkpoints never depend on them."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        else:
            return model


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """Write to a temp file in the same folder, fsync, then rename over the target."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(path: str | os.PathLike, **fields: Any) -> None:
    """Save a checkpoint dict; `fields` are the contract's keys (see docs/architecture.md)."""
    if "state_dict" not in fields:
        raise ValueError("a checkpoint needs a state_dict")
    atomic_torch_save({"format": FORMAT, "version": VERSION, **fields}, path)


def resolve_checkpoint_path(path: str | os.PathLike) -> Path:
    """A run folder means its best.pt (else last.pt); a file is itself."""
    path = Path(path)
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).is_file():
                return path / name
        raise CnnkitError(f"no best.pt or last.pt in run folder {path}")
    if not path.exists():
        raise CnnkitError(f"checkpoint not found: {path}")
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str = "cpu") -> dict[str, Any]:
    """Load with weights_only=True; a corrupt or foreign file is a one-line user error."""
    path = resolve_checkpoint_path(path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # a user's file: whatever the unpickler chokes on, say so in a line
        why = _unreadable(path, exc)
        raise CnnkitError(f"{path} is not a readable checkpoint: {why}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CnnkitError(
            f"{path} is not a cnnkit checkpoint (a plain state_dict or another tool's file?)"
        )
    if ckpt.get("version", 0) > VERSION:
        raise CnnkitError(f"{path} was written by a newer cnnkit (format {ckpt['version']})")
    ckpt.setdefault("task", "classify")  # format 1 knew classification only
    return ckpt


def _unreadable(path: Path, exc: Exception) -> str:
    """Why torch.load refused a file, in a user's words (its own message names unpickler
    internals: "invalid load key", "failed finding central directory", weights_only)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        return e.strerror or str(e)
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):  # torch's zip, old pickle
        return "it is not a PyTorch file"
    # torch words every refusal under weights_only as "Weights only load failed", a corrupt
    # opcode too; a foreign class is the one it names as a global it does not allow
    said = str(exc)
    if any(w in said for w in ("Unsupported global", "not an allowed global", "is blocked")):
        return "it holds Python objects besides weights, which cnnkit does not unpickle"
    return "it is damaged or cut short (copy it again)"
