"""YOLO in Ultralytics' layout: a data.yaml naming the classes and the train/val/test images;
each ``images/.../a.jpg`` has its boxes in ``labels/.../a.txt``, one ``class cx cy w h`` line
per object in fractions of the image (a polygon line ``class x1 y1 x2 y2 ...`` gives its
enclosing box). A missing label file is a background image."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import yaml

from cnnkit.data.decode import IMAGE_EXTENSIONS
from cnnkit.errors import CnnkitError
from cnnkit.tasks.detect.formats.records import (
    ImageRecord,
    ParsedDataset,
    mark_split,
    refuse_repeated_names,
)

YAML_NAMES = ("data.yaml", "data.yml")
SPLITS = ("train", "val", "test")


def find_data_yaml(path: Path) -> Path | None:
    """The data.yaml of a YOLO dataset: the path itself or the one in that folder."""
    if path.is_file():
        return path if path.suffix.lower() in (".yaml", ".yml") else None
    for name in YAML_NAMES:
        if (path / name).is_file():
            return path / name
    return None


def _load_yaml(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise CnnkitError(f"cannot read YOLO dataset file {path}: {e}") from None
    if not isinstance(data, dict) or "names" not in data:
        raise CnnkitError(f"{path} is not a YOLO dataset file (it needs 'names' and 'train')")
    return data


def class_names(path: Path, names: Any) -> tuple[list[str], dict[int, int]]:
    """Class names and label id -> class index from ``names`` (a list or an {id: name} dict)."""
    if isinstance(names, list):
        listed, index_of = [str(n) for n in names], {i: i for i in range(len(names))}
    elif isinstance(names, dict):
        try:
            ids = sorted(int(k) for k in names)
        except (TypeError, ValueError):
            raise CnnkitError(f"{path}: 'names' keys must be class ids (0, 1, ...)") from None
        by_id = {int(k): str(v) for k, v in names.items()}
        listed, index_of = [by_id[i] for i in ids], {cid: i for i, cid in enumerate(ids)}
    else:
        raise CnnkitError(f"{path}: 'names' must be a list or an {{id: name}} mapping")
    return listed, index_of


def image_files(folder: Path) -> list[Path]:
    """Every image under ``folder`` (recursively), sorted."""
    found = []
    for current, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                found.append(Path(current) / name)
    return sorted(found)


def _list_file(path: Path, root: Path, skipped: list[tuple[str, str]]) -> list[Path]:
    """Images named one per line in a .txt list (relative to the list's folder, else root)."""
    found = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        entry = line.strip()
        if not entry:
            continue
        candidates = [Path(entry)] if os.path.isabs(entry) else [path.parent / entry, root / entry]
        hit = next((c for c in candidates if c.is_file()), None)
        if hit is None:
            skipped.append((f"{path}:{n}", f"image not found: {entry}"))
        else:
            found.append(hit)
    return found


def split_images(
    yaml_path: Path,
    root: Path,
    split: str,
    value: Any,
    skipped: list[tuple[str, str]],
    folders: list[Path],
) -> list[Path]:
    """The images a split names: folders (also appended to ``folders``) and/or .txt lists,
    relative to the dataset root."""
    entries = value if isinstance(value, list) else [value]
    images: list[Path] = []
    for entry in entries:
        where = Path(str(entry))
        where = where if where.is_absolute() else root / where
        if not where.exists() and str(entry).startswith("../"):
            # Roboflow's export: data.yaml beside train/ and valid/ says ../train/images
            # (Ultralytics reads it the same way: without the leading ../)
            where = root / str(entry)[3:]
        if where.is_dir():
            images.extend(image_files(where))
            folders.append(where)
        elif where.is_file() and where.suffix.lower() == ".txt":
            images.extend(_list_file(where, root, skipped))
        else:
            raise CnnkitError(f"{yaml_path}: {split}: {entry} not found (looked for {where})")
    return images


def label_path(image: Path) -> Path:
    """``.../images/x/a.jpg`` -> ``.../labels/x/a.txt`` (beside the image when no images/)."""
    text = str(image)
    marker = f"{os.sep}images{os.sep}"
    if marker in text:
        head, tail = text.rsplit(marker, 1)
        return Path(f"{head}{os.sep}labels{os.sep}{tail}").with_suffix(".txt")
    return image.with_suffix(".txt")


def _parse_line(tokens: list[str], index_of: dict[int, int]) -> tuple[int, list[float]] | str:
    """(class index, normalised x1 y1 x2 y2) of one label line, or why it is unusable."""
    if len(tokens) != 5 and (len(tokens) < 7 or len(tokens) % 2 == 0):
        return f"expected 'class cx cy w h' (or a polygon), got {len(tokens)} fields"
    try:
        values = [float(t) for t in tokens]
    except ValueError:
        return "fields must be numbers"
    if not all(math.isfinite(v) for v in values) or values[0] != int(values[0]):
        return "class must be an integer and coordinates finite numbers"
    cid = int(values[0])
    if cid not in index_of:
        return f"unknown class id {cid} (names has {len(index_of)} classes)"
    if len(tokens) == 5:
        cx, cy, w, h = values[1:]
        return index_of[cid], [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
    xs, ys = values[1::2], values[2::2]
    return index_of[cid], [min(xs), min(ys), max(xs), max(ys)]


def read_label_file(image: Path, index_of: dict[int, int]) -> ImageRecord | tuple[str, str]:
    """The record of one image from its label file, or (file:line, reason) for a bad line."""
    labels_file = label_path(image)
    boxes, labels = [], []
    if labels_file.is_file():
        try:
            text = labels_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            return str(labels_file), f"unreadable label file ({e})"
        for n, line in enumerate(text.splitlines(), 1):
            tokens = line.split()
            if not tokens:
                continue
            parsed = _parse_line(tokens, index_of)
            if isinstance(parsed, str):
                return f"{labels_file}:{n}", f"{parsed}; image {image.name} skipped"
            labels.append(parsed[0])
            boxes.append(parsed[1])
    return ImageRecord(str(image), boxes, labels, normalized=True, annotation=str(labels_file))


def parse_yolo(yaml_path: Path) -> ParsedDataset:
    """Read a data.yaml and its label files into image records (a relative ``path`` is taken
    from the yaml's folder, not from Ultralytics' datasets folder)."""
    # absolute, so that labels/ is found beside images/ from any working folder
    yaml_path = Path(os.path.abspath(yaml_path))
    data = _load_yaml(yaml_path)
    classes, index_of = class_names(yaml_path, data["names"])
    refuse_repeated_names(classes, yaml_path)
    root = yaml_path.parent
    if data.get("path"):
        root = Path(os.path.normpath(root / Path(str(data["path"])).expanduser()))
    parsed = ParsedDataset("yolo", classes, {})
    if not data.get("train"):
        raise CnnkitError(f"{yaml_path} names no 'train' images")
    lists: dict[str, list[Path]] = {}
    folders: dict[str, list[Path]] = {}
    for split in SPLITS:
        if not data.get(split):
            continue
        since = len(parsed.skipped)
        try:
            lists[split] = split_images(
                yaml_path, root, split, data[split], parsed.skipped, folders.setdefault(split, [])
            )
        except CnnkitError as e:
            if split != "test":
                raise
            parsed.notes.append(f"{e}: read without a test split")
        mark_split(parsed.skipped_in, parsed.skipped, since, split)
    _drop_training_images_from_val(yaml_path, lists, parsed.notes)
    for split, images in lists.items():
        records = parsed.splits.setdefault(split, [])
        since = len(parsed.skipped)
        for image in images:
            result = read_label_file(image, index_of)
            if isinstance(result, tuple):
                parsed.skipped.append(result)
            else:
                records.append(result)
        mark_split(parsed.skipped_in, parsed.skipped, since, split)
    used = [p for v in lists.values() for p in v]
    reported: set[str] = set()
    for split, where in folders.items():  # a labels/ folder's orphans are its split's
        since = len(parsed.skipped)
        for entry in orphan_labels(where, used):
            if entry[0] not in reported:
                reported.add(entry[0])
                parsed.skipped.append(entry)
        mark_split(parsed.skipped_in, parsed.skipped, since, split)
    return parsed


def orphan_labels(folders: list[Path], images: list[Path]) -> list[tuple[str, str]]:
    """Label files in the labels/ folders parallel to image folders that no image uses."""
    used = {label_path(p) for p in images}
    found: list[tuple[str, str]] = []
    seen: set[Path] = set()
    for folder in folders:
        labels = label_path(folder / "_.jpg").parent
        if labels == folder or labels in seen or not labels.is_dir():
            continue
        seen.add(labels)
        for current, dirs, files in os.walk(labels):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for name in sorted(files):
                path = Path(current) / name
                if name.endswith(".txt") and path not in used:
                    found.append((str(path), "no image for this label file; not used"))
    return sorted(found)


def _drop_training_images_from_val(
    yaml_path: Path, lists: dict[str, list[Path]], notes: list[str]
) -> None:
    """Never validate on training images: a val that repeats train is dropped (a seeded split
    replaces it); val images also in train are left out of val."""
    if "val" not in lists:
        return
    val = lists["val"]
    if not val:
        del lists["val"]
        notes.append(f"{yaml_path.name}'s val names no images: validation comes from train")
        return
    train = {p.resolve() for p in lists["train"]}
    shared = [p for p in val if p.resolve() in train]
    if len(shared) == len(val):
        del lists["val"]
        notes.append(
            f"{yaml_path.name}'s val names the same {len(val)} images as train: not used for "
            "validation (it would score training images)"
        )
    elif shared:
        lists["val"] = [p for p in val if p.resolve() not in train]
        notes.append(f"{len(shared)} of val's {len(val)} images are also in train: left out of val")
