"""Finding and reading pretrained weight files, offline first.

``resolve_weights`` looks, in order, at an explicit path, a file shipped by an installed package,
the torch hub cache, and only then (unless ``CNNKIT_OFFLINE=1``) downloads into that cache.
Every failure a user can fix is a one-line ``CnnkitError``.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from cnnkit.errors import CnnkitError

OFFLINE_ENV = "CNNKIT_OFFLINE"
DOWNLOAD_TIMEOUT_S = 30.0
_TRUE = {"1", "true", "yes", "on"}
_HASH_PREFIX = re.compile(r"-([a-f0-9]{8,64})\.")  # torch hub naming: name-<sha256 prefix>.ext


def offline() -> bool:
    """Whether downloads are disabled (environment variable ``CNNKIT_OFFLINE=1``)."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in _TRUE


def hub_checkpoint_dir() -> Path:
    """The torch hub cache folder for weights (``$TORCH_HOME/hub/checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def resolve_weights(
    name: str,
    *,
    weights_path: str | os.PathLike | None = None,
    file_name: str,
    url: str | None,
    packaged: Callable[[], Path | None] | None = None,
    sha256: str | None = None,
) -> Path:
    """Path of the weights file for ``name``; never downloads when an offline copy exists.

    Order: ``weights_path`` (must exist), ``packaged()`` (a file shipped by an installed
    package), ``<torch hub dir>/checkpoints/<file_name>``, then a download of ``url`` into that
    folder unless ``CNNKIT_OFFLINE=1``. The download is checked against ``sha256`` (a full hash
    or a prefix); without one, a ``-<hex>.`` hash prefix in ``file_name`` is used, as torch hub
    does.
    """
    if weights_path is not None:
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise CnnkitError(f"weights file not found: {path}")
        return path

    if packaged is not None:
        found = packaged()
        if found is not None and Path(found).is_file():
            return Path(found)

    folder = hub_checkpoint_dir()
    cached = folder / file_name
    if cached.is_file():
        return cached

    missing = f"put {file_name} in {folder}/ (or pass --weights PATH)"
    if url is None or offline():
        raise CnnkitError(f"no pretrained weights for {name}: {missing}")

    if sha256 is None:
        match = _HASH_PREFIX.search(file_name)
        sha256 = match.group(1) if match else None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with _socket_timeout(DOWNLOAD_TIMEOUT_S):
            torch.hub.download_url_to_file(
                url, str(cached), hash_prefix=sha256, progress=sys.stderr.isatty()
            )
    except Exception as exc:  # network, disk or hash failure: all fixable by the user
        with contextlib.suppress(OSError):
            if cached.is_file() and sha256 is not None:
                cached.unlink()  # never leave a file that failed its hash check
        raise CnnkitError(
            f"no pretrained weights for {name} (download failed: {_one_line(exc)}): {missing}"
        ) from None
    return cached


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict (``.safetensors`` or a torch file, ``weights_only=True``) onto the CPU.

    A checkpoint dict holding a ``state_dict`` (or ``model``) entry is unwrapped. A missing,
    corrupt or non-state-dict file is a ``CnnkitError`` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CnnkitError(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            try:
                from safetensors.torch import load_file
            except ImportError:
                raise CnnkitError(
                    f"cannot read weights file {path}: install safetensors to read .safetensors"
                ) from None
            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except CnnkitError:
        raise
    except pickle.UnpicklingError:  # also what weights_only=True raises for non-tensor objects
        raise CnnkitError(
            f"cannot read weights file {path}: corrupt, or holds objects other than tensors"
        ) from None
    except Exception as exc:
        raise CnnkitError(f"cannot read weights file {path}: {_one_line(exc)}") from None

    if isinstance(state, dict):
        for key in ("state_dict", "model"):
            inner = state.get(key)
            if isinstance(inner, dict) and inner:
                state = inner
                break
    if (
        not isinstance(state, dict)
        or not state
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())
    ):
        raise CnnkitError(f"cannot read weights file {path}: not a state dict of tensors")
    return dict(state)
