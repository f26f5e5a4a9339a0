"""What users hand a predictor: paths, folders, globs, PIL images and arrays (every task)."""

from __future__ import annotations

import glob
import os
from pathlib import Path

import numpy as np
from PIL import Image

from cnnkit.data import IMAGE_EXTENSIONS
from cnnkit.errors import CnnkitError

ImageInput = str | os.PathLike | Image.Image | np.ndarray


def expand_paths(patterns: list[str]) -> list[Path]:
    """Files as given, folders searched recursively for images, globs expanded; sorted, unique."""
    found: list[Path] = []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            found += sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
            )
        elif path.exists():
            found.append(path)
        elif glob.has_magic(pattern):
            matches = sorted(Path(p) for p in glob.glob(pattern, recursive=True))
            if not matches:
                raise CnnkitError(f"no files match {pattern}")
            found += [p for p in matches if p.is_file()]
        else:
            raise CnnkitError(f"file not found: {pattern}")
    return list(dict.fromkeys(found))


def describe_input(item: ImageInput) -> str:
    """A name for an input in results: its path, or its kind and size."""
    if isinstance(item, (str, os.PathLike)):
        return str(item)
    if isinstance(item, Image.Image):
        return f"<PIL {item.mode} {item.width}x{item.height}>"
    return f"<array {'x'.join(map(str, np.shape(item)))}>"
