"""Small real image files for data tests (imported by test modules; pytest puts tests/ on the
path)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_image(path: Path, value: int, size: tuple[int, int] = (8, 8)) -> Path:
    """A solid PNG whose red channel is ``value`` (so tests can tell images apart)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.zeros((size[0], size[1], 3), np.uint8)
    a[..., 0] = value
    Image.fromarray(a).save(path)
    return path


def make_split(root: Path, counts: dict[str, int], start: int = 0) -> None:
    """root/<class>/<i>.png with red = class index * 50 + i (unique per class for small counts)."""
    for c, (name, n) in enumerate(sorted(counts.items())):
        for i in range(n):
            write_image(root / name / f"{start + i:03d}.png", c * 50 + start + i)
