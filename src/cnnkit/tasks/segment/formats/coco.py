"""COCO instances JSON as semantic masks: each object's polygons or RLE (crowds included: a
crowd of people is people) rasterised by pycocotools at the image's size and painted with its
category's class. Classes are ``background`` (0, every pixel no object covers) and the
categories in id order (1..K), whatever their ids. A pixel that objects of two different
categories both cover is ignore (255), as torchvision's segmentation reference does. An image
with an object that has no usable segmentation is skipped: its mask would call the object
background. The files are found as detection finds them (``annotations/instances_*.json``...).
"""

from __future__ import annotations

import importlib.util
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.errors import CnnkitError
from cnnkit.tasks.detect.formats.coco import (
    category_names,
    drop_empty_namesakes,
    find_image,
    image_folders,
    load_instances,
    split_of_file,
    usable_segmentation,
)
from cnnkit.tasks.detect.formats.records import mark_split, refuse_repeated_names
from cnnkit.tasks.segment.dataset import IGNORE_INDEX, MAX_CLASSES
from cnnkit.tasks.segment.formats.records import MaskError, ParsedSegmentation, SampleRecord

Segmentation = list[list[float]] | dict[str, Any]  # polygons, or RLE (counts list or string)


def check_pycocotools() -> None:
    if importlib.util.find_spec("pycocotools") is None:
        raise CnnkitError(
            "COCO masks are rasterised by pycocotools: pip install pycocotools (or cnnkit[segment])"
        )


@dataclass(frozen=True)
class CocoMask:
    """A MaskSource: one image's objects (class index, segmentation) rasterised on demand."""

    objects: tuple[tuple[int, Any], ...]

    def __call__(self, height: int, width: int) -> np.ndarray:
        return rasterize(self.objects, height, width)


def _to_rle(segmentation: Segmentation, height: int, width: int) -> dict[str, Any]:
    from pycocotools import mask as coco_mask

    if isinstance(segmentation, list):
        return coco_mask.merge(coco_mask.frPyObjects(segmentation, height, width))
    size = [int(v) for v in segmentation["size"]]
    if size != [height, width]:
        raise MaskError(f"an RLE of {size[1]}x{size[0]} on an image of {width}x{height}")
    if isinstance(segmentation["counts"], list):
        return coco_mask.frPyObjects(segmentation, height, width)
    return segmentation


def rasterize(objects: tuple[tuple[int, Any], ...], height: int, width: int) -> np.ndarray:
    """(H, W) uint8: 0 background, each object's class where it lies, 255 where objects of
    different classes overlap."""
    from pycocotools import mask as coco_mask

    out = np.zeros((height, width), dtype=np.uint8)
    covered = np.zeros((height, width), dtype=bool)
    for index, segmentation in objects:
        try:
            pixels = coco_mask.decode(_to_rle(segmentation, height, width)).astype(bool)
        except (ValueError, TypeError, KeyError, IndexError) as e:
            raise MaskError(f"segmentation pycocotools cannot rasterise ({e})") from None
        clash = pixels & covered & (out != index)
        out[pixels & ~covered] = index
        out[clash] = IGNORE_INDEX
        covered |= pixels
    return out


def _objects(
    anns: list[dict[str, Any]], index_of: dict[int, int]
) -> tuple[tuple[int, Any], ...] | str:
    """(class index, segmentation) of an image's annotations, or why the image is unusable."""
    objects = []
    for ann in anns:
        cid = ann.get("category_id")
        if cid not in index_of:
            return f"annotation {ann.get('id', '?')}: unknown category_id {cid!r}"
        if not usable_segmentation(ann.get("segmentation")):
            return f"annotation {ann.get('id', '?')} has no polygon or RLE segmentation"
        objects.append((index_of[cid], ann["segmentation"]))
    return tuple(objects)


def _records(
    path: Path, data: dict[str, Any], index_of: dict[int, int], skipped: list[tuple[str, str]]
) -> list[SampleRecord]:
    folders = image_folders(path)
    by_image: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for ann in data.get("annotations", []):
        if isinstance(ann, dict):
            by_image[ann.get("image_id")].append(ann)
    records = []
    for i, img in enumerate(data["images"]):
        if not isinstance(img, dict) or not isinstance(img.get("file_name"), str):
            skipped.append((f"{path} (images[{i}])", "image entry without a 'file_name'"))
            continue
        image = find_image(img["file_name"], folders)
        if image is None:
            skipped.append((img["file_name"], f"image not found (listed in {path.name})"))
            continue
        objects = _objects(by_image.get(img.get("id"), []), index_of)
        if isinstance(objects, str):
            skipped.append((str(image), f"{objects} in {path.name}"))
            continue
        height, width = img.get("height"), img.get("width")
        declared = None
        if isinstance(height, int) and isinstance(width, int) and height > 0 and width > 0:
            declared = (height, width)
        records.append(SampleRecord(str(image), CocoMask(objects), str(path), declared))
    return records


def parse_coco_masks(paths: list[Path]) -> ParsedSegmentation:
    """Instances files -> sample records: one file is the whole dataset ("train", split by
    val_split later); several give the splits their names say (train / val / test)."""
    check_pycocotools()
    files = [(p, load_instances(p)) for p in paths]
    names, notes = drop_empty_namesakes(files, category_names(files))
    ids = sorted(names)
    if len(ids) + 1 > MAX_CLASSES:
        raise CnnkitError(
            f"{paths[0]}: {len(ids)} categories; masks hold at most {MAX_CLASSES - 1} besides "
            "background"
        )
    index_of = {cid: i for i, cid in enumerate(ids, 1)}
    classes = ["background", *(names[c] for c in ids)]
    refuse_repeated_names(classes, paths[0])  # a category named "background" besides class 0
    parsed = ParsedSegmentation("coco", classes, {}, notes=notes)
    if ids != list(range(1, len(ids) + 1)):
        parsed.notes.append(
            f"COCO category ids {ids[0]}..{ids[-1]} (with gaps) are classes 1..{len(ids)}; "
            "0 is background"
        )
    for path, data in files:
        split = split_of_file(path) if len(paths) > 1 else "train"
        since = len(parsed.skipped)
        parsed.splits.setdefault(split, []).extend(_records(path, data, index_of, parsed.skipped))
        mark_split(parsed.skipped_in, parsed.skipped, since, split)
    return parsed
