"""Pascal VOC: ``Annotations/<id>.xml`` + ``JPEGImages/`` (+ ``ImageSets/Main/<split>.txt``).

VOC corners are 1-based and inclusive (the top-left pixel is (1, 1), and xmax is the last column
the object covers), so (xmin, ymin, xmax, ymax) becomes (xmin - 1, ymin - 1, xmax, ymax) in
cnnkit's 0-based continuous pixels; that is what COCO's bbox and a mask's pixels give for the
same object. ``difficult`` objects become crowd boxes, which mAP ignores as VOC's own evaluation
does. Classes are the sorted object names found.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path

from cnnkit.data.decode import IMAGE_EXTENSIONS
from cnnkit.tasks.detect.formats.records import ImageRecord, ParsedDataset, mark_split

SPLIT_FILES = {"train": "train.txt", "val": "val.txt", "test": "test.txt"}


def is_voc(root: Path) -> bool:
    """Whether a folder has VOC's Annotations/ (with XML files) and JPEGImages/."""
    annotations = root / "Annotations"
    return (
        annotations.is_dir()
        and (root / "JPEGImages").is_dir()
        and any(p.suffix.lower() == ".xml" for p in annotations.iterdir())
    )


def split_ids(root: Path) -> dict[str, list[str]]:
    """Image ids per split from ImageSets/Main (train/val/test, trainval as train); ids no list
    names are train when there is no train list (so a folder without ImageSets is all train)."""
    main = root / "ImageSets" / "Main"
    lists = {s: main / f for s, f in SPLIT_FILES.items() if (main / f).is_file()}
    if "train" not in lists and (main / "trainval.txt").is_file():
        lists["train"] = main / "trainval.txt"
    ids = {split: _ids(path) for split, path in lists.items()}
    if "train" not in ids:
        taken = {i for listed in ids.values() for i in listed}
        stems = sorted(p.stem for p in (root / "Annotations").glob("*.xml"))
        ids["train"] = [s for s in stems if s not in taken]
    return ids


def _ids(path: Path) -> list[str]:
    return [
        line.split()[0] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
    ]


def _number(obj: ET.Element, tag: str) -> float:
    text = obj.findtext(f"bndbox/{tag}")
    if text is None:
        raise ValueError(f"no bndbox/{tag}")
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"bndbox/{tag} is {text}")
    return value


def _image_path(root: Path, xml: ET.Element, image_id: str) -> Path | None:
    images = root / "JPEGImages"
    name = (xml.findtext("filename") or "").strip()
    if name and (images / name).is_file():
        return images / name
    for ext in (".jpg", ".jpeg", ".png", *sorted(IMAGE_EXTENSIONS)):
        if (images / f"{image_id}{ext}").is_file():
            return images / f"{image_id}{ext}"
    return None


def _declared_size(xml: ET.Element) -> tuple[int, int] | None:
    try:
        height = int(float(xml.findtext("size/height") or 0))
        width = int(float(xml.findtext("size/width") or 0))
    except ValueError:
        return None
    return (height, width) if height > 0 and width > 0 else None


def read_xml(root: Path, image_id: str, found: dict[str, int]) -> ImageRecord | tuple[str, str]:
    """One annotation as a record whose labels index ``found`` (names in first-seen order,
    extended here), or (file, reason) when it cannot be used."""
    path = root / "Annotations" / f"{image_id}.xml"
    if not path.is_file():
        return str(path), "annotation file not found"
    try:
        xml = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as e:
        return str(path), f"malformed XML ({e})"
    boxes, names, crowd = [], [], []
    for k, obj in enumerate(xml.findall("object"), 1):
        name = (obj.findtext("name") or "").strip()
        try:
            if not name:
                raise ValueError("no name")
            x1, y1 = _number(obj, "xmin") - 1, _number(obj, "ymin") - 1
            x2, y2 = _number(obj, "xmax"), _number(obj, "ymax")
            difficult = int(float(obj.findtext("difficult") or 0)) == 1
        except ValueError as e:
            return str(path), f"object {k}: {e}; image {image_id} skipped"
        boxes.append([x1, y1, x2, y2])
        names.append(name)
        crowd.append(difficult)
    image = _image_path(root, xml, image_id)
    if image is None:
        wanted = (xml.findtext("filename") or f"{image_id}.jpg").strip()
        return str(path), f"image not found: JPEGImages/{wanted}"
    labels = [found.setdefault(n, len(found)) for n in names]
    return ImageRecord(str(image), boxes, labels, crowd, False, _declared_size(xml), str(path))


def parse_voc(root: Path) -> ParsedDataset:
    """Read a VOC folder's XML annotations (its ImageSets splits if any) into image records."""
    parsed = ParsedDataset("voc", [], {})
    found: dict[str, int] = {}
    for split, ids in split_ids(root).items():
        records = parsed.splits.setdefault(split, [])
        since = len(parsed.skipped)
        for image_id in ids:
            result = read_xml(root, image_id, found)
            if isinstance(result, tuple):
                parsed.skipped.append(result)
            else:
                records.append(result)
        mark_split(parsed.skipped_in, parsed.skipped, since, split)
    parsed.classes = sorted(found)
    sorted_index = {found[name]: i for i, name in enumerate(parsed.classes)}
    for records in parsed.splits.values():
        for record in records:
            record.labels = [sorted_index[label] for label in record.labels]
    return parsed
