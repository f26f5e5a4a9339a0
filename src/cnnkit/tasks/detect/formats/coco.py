"""COCO instances JSON: ``annotations/instances_<split>*.json`` (or a .json given directly, or
Roboflow's ``<split>/_annotations.coco.json``) with the images in the usual places."""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from cnnkit.errors import CnnkitError
from cnnkit.tasks.detect.formats.records import (
    ImageRecord,
    ParsedDataset,
    mark_split,
    refuse_repeated_names,
    split_of_name,
)

ROBOFLOW_NAME = "_annotations.coco.json"


def find_instances_files(root: Path) -> list[Path]:
    """The instances files of a COCO dataset folder, or [] when it holds none."""
    annotations = root / "annotations"
    if annotations.is_dir():
        found = sorted(annotations.glob("instances_*.json"))
        if found:
            return found
        named = [p for p in sorted(annotations.glob("*.json")) if split_of_name(p.stem)]
        if named:
            return named
    found = sorted(root.glob("instances_*.json"))
    if found:
        return found
    roboflow = sorted(root.glob(f"*/{ROBOFLOW_NAME}"))
    return roboflow or ([root / ROBOFLOW_NAME] if (root / ROBOFLOW_NAME).is_file() else [])


def split_of_file(path: Path) -> str:
    """A file's split from its name (instances_val2017.json -> val), else its folder's, else
    train."""
    return split_of_name(path.stem) or split_of_name(path.parent.name) or "train"


def image_folders(json_path: Path) -> list[Path]:
    """Where the images of one instances file may be, most specific first."""
    folder = json_path.parent
    root = folder.parent if folder.name.lower() == "annotations" else folder
    tag = json_path.stem.removeprefix("instances_")
    candidates = [root / "images" / tag, root / tag, root / "images", root, folder]
    split = split_of_name(tag)
    if split:
        candidates[2:2] = [root / "images" / split, root / split]
    unique: list[Path] = []
    for c in candidates:
        if c not in unique and c.is_dir():
            unique.append(c)
    return unique


def load_instances(path: Path) -> dict[str, Any]:
    """An instances file's JSON, checked to have the lists COCO needs (CnnkitError if not)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CnnkitError(f"cannot read COCO annotations {path}: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise CnnkitError(f"{path} is not a COCO instances file (no 'images' list)")
    for key in ("annotations", "categories"):
        if not isinstance(data.get(key, []), list):
            raise CnnkitError(f"{path}: '{key}' must be a list")
    return data


def category_names(files: list[tuple[Path, dict[str, Any]]]) -> dict[int, str]:
    """Category id -> name over all files; the same id must have the same name everywhere."""
    names: dict[int, str] = {}
    for path, data in files:
        for cat in data.get("categories", []):
            if not isinstance(cat, dict) or not isinstance(cat.get("id"), int):
                raise CnnkitError(f"{path}: every category needs an integer 'id' and a 'name'")
            cid, name = cat["id"], str(cat.get("name", cat["id"]))
            if names.setdefault(cid, name) != name:
                raise CnnkitError(
                    f"{path}: category id {cid} is '{name}' here but '{names[cid]}' in another file"
                )
    return names


def drop_empty_namesakes(
    files: list[tuple[Path, dict[str, Any]]], names: dict[int, str]
) -> tuple[dict[int, str], list[str]]:
    """Categories that share a name with another and hold no annotation in any file (Roboflow
    exports name their root category after the dataset, which may be a class's name) are
    dropped, with a note; a name that two used categories share is refused in one line."""
    used = {
        ann.get("category_id")
        for _, data in files
        for ann in data.get("annotations", [])
        if isinstance(ann, dict)
    }
    counts = Counter(names.values())
    dropped = [c for c, n in names.items() if counts[n] > 1 and c not in used]
    kept = {c: n for c, n in names.items() if c not in dropped}
    refuse_repeated_names(list(kept.values()), " and ".join(str(p) for p, _ in files))
    notes = [
        f"category id {c} ('{names[c]}') holds no annotation and shares its name with another: "
        "left out of the classes"
        for c in dropped
    ]
    return kept, notes


def _box(ann: dict[str, Any]) -> list[float] | None:
    """[x1, y1, x2, y2] from an annotation's [x, y, w, h] (or, without one, the box around its
    segmentation), or None when it is malformed."""
    bbox = ann.get("bbox")
    if bbox is None and ann.get("segmentation") is not None:
        return _segmentation_box(ann["segmentation"])
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        return None
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in bbox):
        return None
    x, y, w, h = (float(v) for v in bbox)
    return [x, y, x + w, y + h]


def usable_segmentation(segmentation: Any) -> bool:
    """Polygons (lists of at least 3 x, y pairs) or an RLE dict with counts and size."""
    if isinstance(segmentation, dict):
        return "counts" in segmentation and len(segmentation.get("size", ())) == 2
    if not isinstance(segmentation, list) or not segmentation:
        return False
    return all(
        isinstance(p, list)
        and len(p) >= 6
        and len(p) % 2 == 0
        and all(isinstance(v, (int, float)) for v in p)
        for p in segmentation
    )


def _segmentation_box(segmentation: Any) -> list[float] | None:
    """The box around a usable COCO segmentation (polygons, or an RLE through pycocotools),
    or None."""
    if not usable_segmentation(segmentation):
        return None
    if isinstance(segmentation, list):
        xs = [v for polygon in segmentation for v in polygon[0::2]]
        ys = [v for polygon in segmentation for v in polygon[1::2]]
        if not all(math.isfinite(v) for v in xs + ys):
            return None
        return [float(min(xs)), float(min(ys)), float(max(xs)), float(max(ys))]
    try:
        from pycocotools import mask as coco_mask

        rle = segmentation
        if isinstance(rle["counts"], list):
            rle = coco_mask.frPyObjects(rle, *rle["size"])
        x, y, w, h = (float(v) for v in coco_mask.toBbox(rle))
    except Exception:  # noqa: BLE001 - pycocotools absent, or a malformed RLE
        return None
    return [x, y, x + w, y + h]


def find_image(file_name: str, folders: list[Path]) -> Path | None:
    """The first of ``folders`` that holds ``file_name`` (a Windows tool's ``a\\b.jpg`` is
    ``a/b.jpg``), or None."""
    names = [file_name]
    if "\\" in file_name:
        names.append(file_name.replace("\\", "/"))
    for folder in folders:
        for name in names:
            candidate = folder / name
            if candidate.is_file():
                return candidate
    return None


def _records(
    path: Path, data: dict[str, Any], index_of: dict[int, int], skipped: list[tuple[str, str]]
) -> list[ImageRecord]:
    folders = image_folders(path)
    by_image: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for ann in data.get("annotations", []):
        if isinstance(ann, dict):
            by_image[ann.get("image_id")].append(ann)
    known = {img.get("id") for img in data["images"] if isinstance(img, dict)}
    orphans = sum(len(v) for k, v in by_image.items() if k not in known)
    if orphans:
        skipped.append(
            (str(path), f"{orphans} annotations name image ids not in 'images'; ignored")
        )
    records: list[ImageRecord] = []
    for i, img in enumerate(data["images"]):
        if not isinstance(img, dict) or not isinstance(img.get("file_name"), str):
            skipped.append((f"{path} (images[{i}])", "image entry without a 'file_name'"))
            continue
        file_name = img["file_name"]
        image_path = find_image(file_name, folders)
        if image_path is None:
            tried = ", ".join(str(f) for f in folders) or str(path.parent)
            skipped.append(
                (file_name, f"image not found (listed in {path.name}; looked in {tried})")
            )
            continue
        record = _image_record(path, img, by_image.get(img.get("id"), []), index_of, image_path)
        if isinstance(record, tuple):
            skipped.append(record)
        else:
            records.append(record)
    return records


def _image_record(
    path: Path,
    img: dict[str, Any],
    anns: list[dict[str, Any]],
    index_of: dict[int, int],
    image_path: Path,
) -> ImageRecord | tuple[str, str]:
    """The record of one image entry, or (where, why) when one of its annotations is bad."""
    boxes, labels, crowd = [], [], []
    for ann in anns:
        where = f"{path} (annotation {ann.get('id', '?')})"
        box = _box(ann)
        if box is None:
            return where, (
                "bbox must be 4 numbers [x, y, w, h] (or, without one, a polygon or RLE "
                f"segmentation); image {img['file_name']} skipped"
            )
        cid = ann.get("category_id")
        if cid not in index_of:
            return where, f"unknown category_id {cid!r}; image {img['file_name']} skipped"
        boxes.append(box)
        labels.append(index_of[cid])
        crowd.append(bool(ann.get("iscrowd", 0)))
    height, width = img.get("height"), img.get("width")
    declared = None
    if isinstance(height, int) and isinstance(width, int) and height > 0 and width > 0:
        declared = (height, width)
    return ImageRecord(str(image_path), boxes, labels, crowd, False, declared, str(path))


def parse_coco(paths: list[Path]) -> ParsedDataset:
    """Read instances files into image records: one file is the whole dataset ("train", split
    by val_split later); several give the splits their names say (train / val / test)."""
    files = [(p, load_instances(p)) for p in paths]
    names, notes = drop_empty_namesakes(files, category_names(files))
    ids = sorted(names)
    index_of = {cid: i for i, cid in enumerate(ids)}
    parsed = ParsedDataset("coco", [names[c] for c in ids], {}, notes=notes)
    for path, data in files:
        split = split_of_file(path) if len(paths) > 1 else "train"
        since = len(parsed.skipped)
        records = _records(path, data, index_of, parsed.skipped)
        mark_split(parsed.skipped_in, parsed.skipped, since, split)
        parsed.splits.setdefault(split, []).extend(records)
    return parsed
