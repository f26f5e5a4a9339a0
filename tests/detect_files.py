"""Tiny detection datasets written in each format from the same objects (imported by the
detection tests; pytest puts tests/ on the path).

A sample is (stem, (H, W), [(class index, (x1, y1, x2, y2)), ...]) with integer-pixel boxes in
cnnkit's convention (x2 = last covered column + 1), so every writer stores the same objects.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

Sample = tuple[str, tuple[int, int], list[tuple[int, tuple[int, int, int, int]]]]

SAMPLES: list[Sample] = [
    ("a", (30, 40), [(0, (2, 3, 12, 10)), (1, (20, 5, 40, 30))]),  # second box touches the border
    ("b", (24, 36), [(1, (0, 0, 7, 9))]),
    ("c", (20, 20), []),  # background image
    ("d", (32, 28), [(0, (5, 6, 9, 30)), (0, (12, 1, 27, 4)), (1, (14, 10, 26, 20))]),
]
CLASSES = ["cat", "dog"]


def shared_dataset(name: str) -> Path:
    """../shared/data/<name>: skipped when absent, unless CNNKIT_REQUIRE_SHARED_DATA=1."""
    path = SHARED_DATA / name
    if not path.is_dir():
        if os.environ.get("CNNKIT_REQUIRE_SHARED_DATA") == "1":
            pytest.fail(f"CNNKIT_REQUIRE_SHARED_DATA=1 but {path} is missing")
        pytest.skip(f"shared data {name} not found at {path}")
    return path


def photo(path: Path, size: tuple[int, int], seed: int = 0) -> Path:
    """A noise PNG (or JPEG by suffix) of (H, W) pixels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def corrupt_png(path: Path) -> Path:
    """A PNG cut off halfway (decode_image refuses it)."""
    photo(path, (16, 16))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def write_coco(
    root: Path,
    samples: list[Sample],
    classes: list[str] = CLASSES,
    split: str = "train",
    category_ids: list[int] | None = None,
) -> Path:
    """root/annotations/instances_<split>.json + root/images/<split>/<stem>.png."""
    ids = category_ids or list(range(1, len(classes) + 1))
    images, annotations = [], []
    for i, (stem, (h, w), objects) in enumerate(samples, 1):
        photo(root / "images" / split / f"{stem}.png", (h, w), i)
        images.append({"id": i, "file_name": f"{stem}.png", "height": h, "width": w})
        for label, (x1, y1, x2, y2) in objects:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i,
                    "category_id": ids[label],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
    categories = [{"id": cid, "name": name} for cid, name in zip(ids, classes, strict=True)]
    path = root / "annotations" / f"instances_{split}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"images": images, "annotations": annotations, "categories": categories}
    path.write_text(json.dumps(data))
    return path


def yolo_line(label: int, box: tuple[int, int, int, int], size: tuple[int, int]) -> str:
    (h, w), (x1, y1, x2, y2) = size, box
    cx, cy, bw, bh = (x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h
    return f"{label} {cx:.6f} {cy:.6f} {bw:.6f} {bh:.6f}"


def write_yolo(
    root: Path, samples: list[Sample], classes: list[str] = CLASSES, split: str = "train"
) -> Path:
    """root/data.yaml + images/<split>/<stem>.png + labels/<split>/<stem>.txt (none for a
    sample without objects: a background image)."""
    for i, (stem, size, objects) in enumerate(samples, 1):
        photo(root / "images" / split / f"{stem}.png", size, i)
        if objects:
            label = root / "labels" / split / f"{stem}.txt"
            label.parent.mkdir(parents=True, exist_ok=True)
            label.write_text("\n".join(yolo_line(c, b, size) for c, b in objects) + "\n")
    data = root / "data.yaml"
    if not data.exists():
        data.write_text(yaml.safe_dump({"path": ".", "train": f"images/{split}", "names": classes}))
    return data


def write_voc(root: Path, samples: list[Sample], classes: list[str] = CLASSES) -> Path:
    """root/Annotations/<stem>.xml (1-based inclusive corners) + root/JPEGImages/<stem>.png."""
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    for i, (stem, (h, w), objects) in enumerate(samples, 1):
        photo(root / "JPEGImages" / f"{stem}.png", (h, w), i)
        parts = [
            f"<annotation><filename>{stem}.png</filename>",
            f"<size><width>{w}</width><height>{h}</height><depth>3</depth></size>",
        ]
        for label, (x1, y1, x2, y2) in objects:
            parts.append(
                f"<object><name>{classes[label]}</name><difficult>0</difficult><bndbox>"
                f"<xmin>{x1 + 1}</xmin><ymin>{y1 + 1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax>"
                "</bndbox></object>"
            )
        (root / "Annotations" / f"{stem}.xml").write_text("".join(parts) + "</annotation>")
    return root


def write_masks(root: Path, samples: list[Sample], images: str = "images", masks: str = "masks"):
    """root/<images>/<stem>.png + root/<masks>/<stem>_mask.png, object k filled with k+1."""
    for i, (stem, (h, w), objects) in enumerate(samples, 1):
        photo(root / images / f"{stem}.png", (h, w), i)
        mask = np.zeros((h, w), np.uint8)
        for k, (_, (x1, y1, x2, y2)) in enumerate(objects, 1):
            mask[y1:y2, x1:x2] = k
        (root / masks).mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask).save(root / masks / f"{stem}_mask.png")
    return root
