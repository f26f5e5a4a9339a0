"""Pascal VOC segmentation: ``SegmentationClass/<id>.png`` + ``JPEGImages/<id>.jpg``
(+ ``ImageSets/Segmentation/<split>.txt``).

VOC stores each class mask as a palette PNG whose palette index is the class (0 background,
1..20 the objects) and 255 the "void" border around objects, read as ignore. The class names are
VOC's 21 (background first) unless a ``classes.txt`` beside the folders names others (line k =
index k). A mask saved as RGB instead is mapped back through VOC's colour palette. Images that
have no mask are not part of the segmentation set (VOC's JPEGImages holds many more).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from cnnkit.data.decode import IMAGE_EXTENSIONS
from cnnkit.tasks.detect.formats.records import mark_split
from cnnkit.tasks.segment.formats.classes import ClassMap, class_map_of
from cnnkit.tasks.segment.formats.records import (
    FileMask,
    ParsedSegmentation,
    SampleRecord,
    read_mask_file,
)

VOC_CLASSES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
SPLIT_FILES = {"train": "train.txt", "val": "val.txt", "test": "test.txt"}
MASKS, IMAGES = "SegmentationClass", "JPEGImages"


def voc_palette(count: int = 256) -> np.ndarray:
    """(count, 3) uint8: VOC's colour for each index (the bits of the index spread over R, G,
    B from the high bit down; index 255 is the void border's cream)."""
    index = np.arange(count)
    palette = np.zeros((count, 3), dtype=np.int64)
    for bit in range(8):
        for channel in range(3):
            palette[:, channel] |= ((index >> (3 * bit + channel)) & 1) << (7 - bit)
    return palette.astype(np.uint8)


def is_voc_segmentation(root: Path) -> bool:
    """Whether a folder has VOC's SegmentationClass/ (with PNGs) and JPEGImages/."""
    masks = root / MASKS
    return (
        masks.is_dir()
        and (root / IMAGES).is_dir()
        and any(p.suffix.lower() == ".png" for p in masks.iterdir())
    )


def _ids(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.split()[0] for line in lines if line.strip()]


def split_ids(root: Path) -> dict[str, tuple[list[str], str]]:
    """split -> (image ids, the list file) from ImageSets/Segmentation (trainval as train when
    there is no train list); without lists every mask is train."""
    lists_dir = root / "ImageSets" / "Segmentation"
    lists = {s: lists_dir / f for s, f in SPLIT_FILES.items() if (lists_dir / f).is_file()}
    if "train" not in lists and (lists_dir / "trainval.txt").is_file():
        lists["train"] = lists_dir / "trainval.txt"
    if not lists:
        stems = sorted(p.stem for p in (root / MASKS).glob("*.png"))
        return {"train": (stems, f"{MASKS}/")}
    return {split: (_ids(path), str(path.relative_to(root))) for split, path in lists.items()}


def _image_path(root: Path, image_id: str) -> Path | None:
    for ext in (".jpg", ".jpeg", ".png", *sorted(IMAGE_EXTENSIONS)):
        if (root / IMAGES / f"{image_id}{ext}").is_file():
            return root / IMAGES / f"{image_id}{ext}"
    return None


def parse_voc(root: Path) -> ParsedSegmentation:
    """Every listed id's image and palette mask as sample records."""
    names_file = root / "classes.txt"
    if names_file.is_file():
        class_map = class_map_of(names_file)
    else:
        class_map = ClassMap.from_names(dict(enumerate(VOC_CLASSES)), "Pascal VOC's classes")
    read = partial(read_mask_file, palette=voc_palette())
    parsed = ParsedSegmentation("voc", class_map.classes, {}, notes=list(class_map.notes))
    for split, (ids, listed_in) in split_ids(root).items():
        records = parsed.splits.setdefault(split, [])
        since = len(parsed.skipped)
        for image_id in ids:
            mask = root / MASKS / f"{image_id}.png"
            image = _image_path(root, image_id)
            if not mask.is_file():
                parsed.skipped.append((str(mask), f"mask not found (listed in {listed_in})"))
            elif image is None:
                wanted = root / IMAGES / f"{image_id}.jpg"
                parsed.skipped.append((str(wanted), "image not found for this mask"))
            else:
                records.append(
                    SampleRecord(str(image), FileMask(str(mask), class_map.apply, read), str(mask))
                )
        mark_split(parsed.skipped_in, parsed.skipped, since, split)
    return parsed
