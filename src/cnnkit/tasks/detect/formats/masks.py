"""Image + instance-mask pairs: ``PNGImages/`` + ``PedMasks/`` (Penn-Fudan) or ``images/`` +
``masks/``, one mask per image, paired by file stem (an optional ``_mask`` suffix on the mask).

A mask holds 0 for background and one value per object (a colour per object in an RGB mask);
each object's box is (min col, min row, max col + 1, max row + 1), the pixels it covers in
0-based continuous coordinates. One class, named by a ``classes.txt`` beside the folders, else
``person`` for Penn-Fudan's layout, else ``object``. An image without a mask is skipped (it is
not known to be background); an all-zero mask is a background image.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from cnnkit.data.decode import IMAGE_EXTENSIONS
from cnnkit.errors import CnnkitError
from cnnkit.tasks.detect.formats.records import (
    ImageRecord,
    ParsedDataset,
    mark_split,
    split_of_name,
)

LAYOUTS = (("PNGImages", "PedMasks", "person"), ("images", "masks", "object"))
PEDMASKS = "PedMasks"
MASK_SUFFIX = "_mask"

Folders = dict[str, tuple[Path, Path]]  # split -> (images folder, masks folder)


def _files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def _has_images(folder: Path) -> bool:
    return any(
        p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
        for p in folder.iterdir()
    )


class Layout(NamedTuple):
    """Where an image + mask dataset's pairs are."""

    folders: Folders  # split -> (images folder, masks folder)
    default_class: str  # the class name when no classes.txt names it
    pedmasks: bool  # Penn-Fudan's PedMasks layout
    notes: list[str]  # split folders left out (a second folder for a split already found)


def layout_folders(root: Path) -> Layout | None:
    """Where the image + mask pairs under ``root`` are, else None. The pairs may be split on
    either side: PNGImages/ + PedMasks/ (all one split), PNGImages/test/ + PedMasks/test/, or
    test/PNGImages/ + test/PedMasks/ (train / val / test by the folder's name; of two folders
    whose names mean one split, such as train/ and trainval/, the first by name is read and
    the other is named in a note)."""
    for images_name, masks_name, default in LAYOUTS:
        pedmasks = masks_name == PEDMASKS
        images, masks = root / images_name, root / masks_name
        candidates: list[tuple[str, Path, Path]] = []  # (split, images, masks)
        if images.is_dir() and masks.is_dir():
            if _has_images(masks):
                return Layout({"train": (images, masks)}, default, pedmasks, [])
            for sub in sorted(p for p in masks.iterdir() if p.is_dir()):
                split = split_of_name(sub.name)
                if split and (images / sub.name).is_dir() and _has_images(sub):
                    candidates.append((split, images / sub.name, sub))
        elif root.is_dir():
            for sub in sorted(p for p in root.iterdir() if p.is_dir()):
                split = split_of_name(sub.name)
                pair = sub / images_name, sub / masks_name
                if split and pair[0].is_dir() and pair[1].is_dir() and _has_images(pair[1]):
                    candidates.append((split, *pair))
        found: Folders = {}
        notes = []
        for split, image_folder, mask_folder in candidates:
            if split in found:
                kept = found[split]
                count = len(_files(mask_folder))
                notes.append(
                    f"{_shown(root, image_folder)} + {_shown(root, mask_folder)} left out "
                    f"({count} mask{'s' if count != 1 else ''}): {_shown(root, kept[0])} + "
                    f"{_shown(root, kept[1])} is the {split} split already (rename one pair "
                    "of folders to use both)"
                )
                continue
            found[split] = (image_folder, mask_folder)
        if found:
            return Layout(found, default, pedmasks, notes)
    return None


def _shown(root: Path, folder: Path) -> str:
    return f"{folder.relative_to(root).as_posix()}/"


# what opening a mask file raises for a file that is no readable mask
UNREADABLE_MASK = (
    OSError,
    ValueError,
    SyntaxError,
    Image.DecompressionBombError,
    Image.DecompressionBombWarning,
)


def open_mask(path: str | Path) -> Image.Image:
    """A mask file, opened and decoded (use it in a ``with``). PIL's bomb warning (over ~89 M
    pixels) is raised as an error, as decode_image refuses such images; anything unreadable
    raises one of UNREADABLE_MASK (shared by the detection and segmentation readers)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        im = Image.open(path)
    try:
        im.load()
    except BaseException:
        im.close()
        raise
    return im


def _load_mask(path: str | Path) -> np.ndarray | str:
    """(H, W) int64 ids, or the reason the file cannot be read."""
    try:
        with open_mask(path) as im:
            if im.mode in ("LA", "La", "PA"):  # the ids, and an alpha channel that is not one
                return np.asarray(im.getchannel(0)).astype(np.int64)
            if len(im.getbands()) == 1:  # 1, L, P, I, I;16, F: one value per pixel
                return np.asarray(im).astype(np.int64)
            rgb = np.asarray(im.convert("RGB")).astype(np.int64)  # colours, one per object
    except UNREADABLE_MASK as e:
        return f"unreadable mask ({e})"
    packed = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    colours, ids = np.unique(packed, return_inverse=True)
    ids = ids.reshape(packed.shape)
    return ids if colours[0] == 0 else ids + 1  # black stays background


def read_instance_mask(path: str | Path) -> np.ndarray:
    """An instance mask file -> (H, W) int64 object ids (0 background; an RGB mask's colours
    numbered 1.. in sorted order). Raises CnnkitError for an unreadable file."""
    mask = _load_mask(path)
    if isinstance(mask, str):
        raise CnnkitError(f"{path}: {mask}")
    return mask


def object_ids(mask: np.ndarray) -> list[int]:
    """The object ids of a mask in increasing order: its non-zero values, except 255 when other
    ids are present too (VOC's 'void' outline; a mask of only 0 and 255 is one object)."""
    ids = [int(v) for v in np.unique(mask) if v != 0]
    return [v for v in ids if v != 255] if len(ids) > 1 else ids


def boxes_from_mask(mask: np.ndarray) -> np.ndarray:
    """(K, 4) x1 y1 x2 y2 of each object of an (H, W) mask, in increasing id order."""
    boxes = []
    for value in object_ids(mask):
        pixels = mask == value
        cols = np.flatnonzero(pixels.any(axis=0))
        rows = np.flatnonzero(pixels.any(axis=1))
        boxes.append([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1])
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4)


def class_name(root: Path, default: str) -> str:
    """The one class's name: the line of ``classes.txt`` beside the folders, else ``default``."""
    path = root / "classes.txt"
    if not path.is_file():
        return default
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(names) != 1:
        raise CnnkitError(
            f"{path} must name exactly one class for instance masks, it names {len(names)}"
        )
    return names[0]


def mask_pairs(images: Path, masks: Path) -> tuple[list[tuple[Path, Path]], list[tuple[str, str]]]:
    """(image, mask) pairs by stem, and the images / masks left without a partner."""
    by_stem: dict[str, Path] = {}
    for mask in _files(masks):
        stem = mask.stem.removesuffix(MASK_SUFFIX) if mask.stem.endswith(MASK_SUFFIX) else mask.stem
        by_stem.setdefault(stem, mask)
    pairs, unpaired = [], []
    paired: dict[str, Path] = {}  # stem -> the image that took its mask
    for image in _files(images):
        mask = by_stem.pop(image.stem, None)
        if mask is not None:
            pairs.append((image, mask))
            paired[image.stem] = image
        elif image.stem in paired:
            first = paired[image.stem].name
            unpaired.append((str(image), f"{first} has the same name and took its mask"))
        else:
            unpaired.append((str(image), f"no mask for this image in {masks.name}/"))
    unpaired += [
        (str(m), f"image not found for this mask in {images.name}/") for m in by_stem.values()
    ]
    return pairs, unpaired


LOSSY_MASK_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".jfif", ".webp")


def lossy_mask_note(masks: list[Path]) -> list[str]:
    """A note when masks are JPEG (or WebP) files: lossy compression changes the values along
    every edge, so those pixels get other ids or classes (or are refused as unknown ones)."""
    lossy = [m for m in masks if m.suffix.lower() in LOSSY_MASK_SUFFIXES]
    if not lossy:
        return []
    return [
        f"{len(lossy)} mask{'s are' if len(lossy) != 1 else ' is a'} lossy "
        f"{lossy[0].suffix.lstrip('.').upper()} file{'s' if len(lossy) != 1 else ''} (first: "
        f"{lossy[0]}): compression changes values at the edges, so some pixels get wrong "
        "labels; save masks as PNG"
    ]


def parse_masks(root: Path) -> ParsedDataset:
    """Read every mask's object boxes (one class) into image records."""
    layout = layout_folders(root)
    if layout is None:
        raise CnnkitError(f"{root} holds no image and mask folders")
    folders = layout.folders
    parsed = ParsedDataset(
        "masks",
        [class_name(root, layout.default_class)],
        {split: [] for split in folders},
        notes=list(layout.notes),
    )
    all_pairs = {split: mask_pairs(images, masks) for split, (images, masks) in folders.items()}
    parsed.notes += lossy_mask_note([m for pairs, _ in all_pairs.values() for _, m in pairs])
    for split, (pairs, unpaired) in all_pairs.items():
        since = len(parsed.skipped)
        parsed.skipped += unpaired
        for image, mask_path in pairs:
            mask = _load_mask(mask_path)
            if isinstance(mask, str):
                parsed.skipped.append((str(mask_path), mask))
                continue
            boxes = boxes_from_mask(mask)
            record = ImageRecord(
                str(image), boxes, [0] * len(boxes), None, False, mask.shape[:2], str(mask_path)
            )
            parsed.splits[split].append(record)
        mark_split(parsed.skipped_in, parsed.skipped, since, split)
    return parsed
