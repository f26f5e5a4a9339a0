"""Decoded-image cache: uint8 arrays on disk, keyed by the file list, sizes, mtimes and policy.

An entry is ``<key>.images.npy`` (N, 3, H, W), ``<key>.labels.npy`` and ``<key>.json`` (classes,
paths, skipped files). The json is written last, so an entry without one is incomplete and
ignored. Every file is written to a temp file in the same folder and ``os.replace``d into place.
A changed, added or removed source file changes the key, so stale entries are never read.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CACHE_FORMAT = 1


def default_cache_dir() -> Path:
    """$CNNKIT_CACHE, else ~/.cache/cnnkit/cache."""
    env = os.environ.get("CNNKIT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "cnnkit" / "cache"


@dataclass
class CacheEntry:
    """A decoded split: images (N, 3, H, W) uint8, labels, kept paths and skipped files."""

    images: np.ndarray
    labels: np.ndarray
    paths: list[str]
    skipped: list[tuple[str, str]]


def cache_key(
    paths: list[str],
    labels: list,
    stats: list[tuple[int, int]],
    size: object,
    resize: str,
) -> str:
    """sha256 over the format version, the sorted (path, bytes, mtime_ns, label) rows, the
    target size and the resize policy (built with joins and numpy: 60k files in ~50 ms); a
    label is a class index or a multi-hot row."""
    if not len(paths) == len(labels) == len(stats):
        raise ValueError("paths, labels and stats must have the same length")
    h = hashlib.sha256(f"cnnkit-decode-cache {CACHE_FORMAT}\n{size}\n{resize}\n".encode())
    order = sorted(range(len(paths)), key=paths.__getitem__)
    h.update("\0".join([paths[i] for i in order]).encode("utf-8", "surrogateescape"))
    h.update(np.asarray(stats, dtype=np.int64).reshape(-1, 2)[order].tobytes())
    rows = np.asarray(labels, dtype=np.int64)
    if rows.ndim == 2:  # multi-hot rows: the label count is part of what they mean
        h.update(f"multi-hot {rows.shape[1]}\n".encode())
    h.update(rows[order].tobytes())
    return h.hexdigest()[:32]


def load_entry(cache_dir: Path, key: str) -> CacheEntry | None:
    """The cached entry for ``key``, or None if absent or unreadable."""
    meta_path = cache_dir / f"{key}.json"
    try:
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
        images = np.load(cache_dir / f"{key}.images.npy", allow_pickle=False)
        labels = np.load(cache_dir / f"{key}.labels.npy", allow_pickle=False)
    except (OSError, ValueError):
        return None
    if meta.get("format") != CACHE_FORMAT or not len(images) == len(labels) == len(meta["paths"]):
        return None
    skipped = [(p, r) for p, r in meta["skipped"]]
    return CacheEntry(images, labels, meta["paths"], skipped)


def _atomic_write(path: Path, write: Callable) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def save_entry(cache_dir: Path, key: str, entry: CacheEntry, classes: list[str]) -> bool:
    """Write an entry atomically; warn and return False if the folder is not writable."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        _atomic_write(cache_dir / f"{key}.images.npy", lambda f: np.save(f, entry.images))
        _atomic_write(cache_dir / f"{key}.labels.npy", lambda f: np.save(f, entry.labels))
        meta = {
            "format": CACHE_FORMAT,
            "classes": classes,
            "shape": list(entry.images.shape),
            "paths": entry.paths,
            "skipped": [list(s) for s in entry.skipped],
        }
        data = json.dumps(meta).encode()
        _atomic_write(cache_dir / f"{key}.json", lambda f: f.write(data))
    except OSError as e:
        print(
            f"cnnkit: warning: cannot write the image cache in {cache_dir} ({e.strerror or e}); "
            "continuing without caching",
            file=sys.stderr,
        )
        return False
    return True
