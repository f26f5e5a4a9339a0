"""Tiny segmentation datasets written in each format from the same masks (imported by the
segmentation tests; pytest puts tests/ on the path).

A sample is (stem, (H, W), [(class index, (x1, y1, x2, y2)), ...]): rectangles painted in order
on background 0, covering columns x1..x2-1 and rows y1..y2-1. COCO gets each rectangle as the
polygon of its pixel edges, which pycocotools fills with exactly those pixels, so every writer
stores the same class masks.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from cnnkit.tasks.segment.formats.voc import voc_palette
from detect_files import photo

Rect = tuple[int, int, int, int]
Sample = tuple[str, tuple[int, int], list[tuple[int, Rect]]]

CLASSES = ["background", "cat", "dog"]
SAMPLES: list[Sample] = [
    ("a", (30, 40), [(1, (2, 3, 12, 10)), (2, (20, 5, 40, 30))]),  # the dog touches the border
    ("b", (24, 36), [(2, (0, 0, 7, 9))]),
    ("c", (20, 20), []),  # all background
    ("d", (32, 28), [(1, (5, 6, 9, 30)), (1, (12, 1, 27, 4)), (2, (14, 10, 26, 20))]),
]


def class_mask(size: tuple[int, int], objects: list[tuple[int, Rect]]) -> np.ndarray:
    """The (H, W) uint8 class mask of a sample."""
    mask = np.zeros(size, np.uint8)
    for label, (x1, y1, x2, y2) in objects:
        mask[y1:y2, x1:x2] = label
    return mask


def save_mask(path: Path, mask: np.ndarray, palette: bool = False) -> Path:
    """A grey PNG of the values, or a palette PNG with VOC's colours."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(mask.astype(np.uint8))  # mode L
    if palette:
        image.putpalette(voc_palette().reshape(-1).tolist())  # L becomes P, values kept
        assert image.mode == "P"
    image.save(path)
    return path


def write_classes(path: Path, classes: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(classes) + "\n")
    return path


def write_pairs(
    root: Path,
    samples: list[Sample] = SAMPLES,
    classes: list[str] | None = CLASSES,
    images: str = "images",
    masks: str = "masks",
    suffix: str = "_mask",
) -> Path:
    """root/<images>/<stem>.png + root/<masks>/<stem><suffix>.png + root/classes.txt."""
    for i, (stem, size, objects) in enumerate(samples, 1):
        photo(root / images / f"{stem}.png", size, i)
        save_mask(root / masks / f"{stem}{suffix}.png", class_mask(size, objects))
    if classes is not None:
        write_classes(root / "classes.txt", classes)
    return root


def write_voc(
    root: Path,
    samples: list[Sample] = SAMPLES,
    splits: dict[str, list[str]] | None = None,
    classes: list[str] | None = CLASSES,
) -> Path:
    """root/JPEGImages/<stem>.png + SegmentationClass/<stem>.png (palette) + ImageSets lists;
    a classes.txt unless classes is None (VOC's own 21 names)."""
    for i, (stem, size, objects) in enumerate(samples, 1):
        photo(root / "JPEGImages" / f"{stem}.png", size, i)
        save_mask(root / "SegmentationClass" / f"{stem}.png", class_mask(size, objects), True)
    for split, stems in (splits or {}).items():
        lists = root / "ImageSets" / "Segmentation"
        lists.mkdir(parents=True, exist_ok=True)
        (lists / f"{split}.txt").write_text("\n".join(stems) + "\n")
    if classes is not None:
        write_classes(root / "classes.txt", classes)
    return root


def rectangle_polygon(rect: Rect) -> list[list[float]]:
    x1, y1, x2, y2 = rect
    return [[x1, y1, x2, y1, x2, y2, x1, y2]]


def write_coco(
    root: Path,
    samples: list[Sample] = SAMPLES,
    classes: list[str] = CLASSES,
    category_ids: list[int] | None = None,
    split: str = "train",
) -> Path:
    """root/annotations/instances_<split>.json (rectangle polygons) + root/images/<split>/.
    ``classes`` starts with background, which COCO does not list; category k gets
    category_ids[k - 1] (default k)."""
    ids = category_ids or list(range(1, len(classes)))
    images, annotations = [], []
    for i, (stem, (h, w), objects) in enumerate(samples, 1):
        photo(root / "images" / split / f"{stem}.png", (h, w), i)
        images.append({"id": i, "file_name": f"{stem}.png", "height": h, "width": w})
        for label, (x1, y1, x2, y2) in objects:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i,
                    "category_id": ids[label - 1],
                    "segmentation": rectangle_polygon((x1, y1, x2, y2)),
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
    categories = [{"id": c, "name": n} for c, n in zip(ids, classes[1:], strict=True)]
    path = root / "annotations" / f"instances_{split}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    return path


def write_yaml(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
