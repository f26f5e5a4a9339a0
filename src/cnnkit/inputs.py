"""What users hand a predictor: paths, folders, globs, PIL images, arrays and tensors (every
task), and the folders it writes into."""

from __future__ import annotations

import glob
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cnnkit.data import IMAGE_EXTENSIONS
from cnnkit.errors import CnnkitError

# a file; a PIL image; an (H, W[, C]) array of uint8, uint16, bool or float in [0, 1]; a tensor
# as torchvision's (C, H, W) or as the arrays
ImageInput = str | os.PathLike | Image.Image | np.ndarray | torch.Tensor


def _mask_folders(root: Path) -> list[Path]:
    """The folders of masks when ``root`` is a segmentation or instance-mask dataset's root
    (PNGImages/ + PedMasks/, images/ + masks/, their split folders, VOC's SegmentationClass/
    beside JPEGImages/); none for any other folder."""
    from cnnkit.tasks.detect.formats.masks import layout_folders

    layout = layout_folders(root)
    folders = [masks for _, masks in layout.folders.values()] if layout else []
    if (root / "JPEGImages").is_dir():
        folders += [root / name for name in ("SegmentationClass", "SegmentationObject")]
    return folders


def expand_paths(patterns: list[str]) -> list[Path]:
    """Files as given, folders searched recursively for images, globs expanded; sorted, unique.
    A dataset's root (PNGImages/ + PedMasks/, images/ + masks/, VOC) gives its photos: its
    masks are left out, with a note. CnnkitError when nothing is found and a folder given held
    no image."""
    found: list[Path] = []
    empty: list[str] = []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            images = sorted(  # a broken or looping link is kept: named as unreadable later
                p
                for p in path.rglob("*")
                if (p.is_file() or p.is_symlink()) and p.suffix.lower() in IMAGE_EXTENSIONS
            )
            folders = _mask_folders(path)
            masks = [p for p in images if any(p.is_relative_to(f) for f in folders)]
            if masks:
                print(
                    f"cnnkit: left out the {len(masks)} mask file(s) of the dataset {pattern}"
                    " (give their folder to predict them as photos)",
                    file=sys.stderr,
                )
                images = [p for p in images if p not in set(masks)]
            empty += [] if images else [pattern]
            found += images
        elif path.exists() or path.is_symlink():
            found.append(path)
        elif glob.has_magic(pattern):
            matches = sorted(Path(p) for p in glob.glob(pattern, recursive=True))
            if not matches:
                raise CnnkitError(f"no files match {pattern}")
            found += [p for p in matches if p.is_file()]
        else:
            raise CnnkitError(f"file not found: {pattern}")
    if not found and empty:
        raise CnnkitError(f"no images in the folder {empty[0]}")
    return list(dict.fromkeys(found))


def describe_input(item: ImageInput) -> str:
    """A name for an input in results: its path, or its kind and size."""
    if isinstance(item, (str, os.PathLike)):
        return str(item)
    if isinstance(item, Image.Image):
        return f"<PIL {item.mode} {item.width}x{item.height}>"
    kind = "tensor" if isinstance(item, torch.Tensor) else "array"
    return f"<{kind} {'x'.join(map(str, np.shape(item)))}>"


def decode_each(
    items: list[ImageInput], decode: Callable[[ImageInput], np.ndarray] | None = None
) -> list[np.ndarray]:
    """Decode every input of one predict() call (by ``decode``, default decode_image); an
    unreadable one raises its ImageDecodeError naming it: its path, or its place in the list."""
    from cnnkit.data.decode import ImageDecodeError, decode_image

    decode = decode or decode_image
    arrays = []
    for k, item in enumerate(items):
        try:
            arrays.append(decode(item))
        except ImageDecodeError as e:
            if isinstance(item, (str, os.PathLike)):
                raise type(e)(f"'{describe_input(item)}': {e}") from None
            if len(items) > 1:
                raise type(e)(f"input {k} of the {len(items)}: {e}") from None
            raise
    return arrays


def output_folder(path: str | os.PathLike, what: str) -> Path:
    """``path`` as a folder to write ``what`` into, made when missing; CnnkitError in one line
    when it is a file or cannot be made or written (checked before any work is done)."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise CnnkitError(f"{folder} is a file, not a folder to write {what} into")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        reason = e.strerror or str(e)
        raise CnnkitError(f"cannot make the folder {folder} for {what}: {reason}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CnnkitError(f"cannot write {what} into {folder}: permission denied")
    return folder


def refuse_run_folder(path: str | os.PathLike, what: str) -> None:
    """One line when ``path`` is a run folder: ``what`` (metrics.json, plots) written there
    would replace the trained run's own records."""
    folder = Path(path)
    if (folder / "config.yaml").is_file() and any(
        (folder / name).is_file() for name in ("best.pt", "last.pt", "metrics.json")
    ):
        raise CnnkitError(
            f"{folder} is a run folder: {what} written there would replace the run's own "
            "records; give another folder"
        )
