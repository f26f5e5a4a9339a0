"""Detection dataset readers: COCO JSON, YOLO, Pascal VOC and image + instance-mask pairs.

``read_detection(path)`` finds the format from the path (``detect_format``), reads its
annotations, decodes every image once and returns DetectionSplits in the contract of
cnnkit.tasks.detect.dataset. What had to be skipped is listed in ``skipped`` (nothing is
printed); only a path that is no known layout, or a dataset file that cannot be read at all,
raises CnnkitError.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from cnnkit.errors import CnnkitError
from cnnkit.tasks.detect.dataset import DetectionSplits
from cnnkit.tasks.detect.formats.build import build_splits, check_options
from cnnkit.tasks.detect.formats.coco import find_instances_files, parse_coco
from cnnkit.tasks.detect.formats.masks import layout_folders, parse_masks, read_instance_mask
from cnnkit.tasks.detect.formats.records import ParsedDataset
from cnnkit.tasks.detect.formats.voc import is_voc, parse_voc
from cnnkit.tasks.detect.formats.yolo import find_data_yaml, parse_yolo

__all__ = ["FORMATS", "detect_format", "read_detection", "read_instance_mask"]

FORMATS = ("coco", "yolo", "voc", "masks")
LAYOUTS_HELP = (
    "COCO (annotations/instances_<split>.json + images, or the .json), YOLO (data.yaml), "
    "Pascal VOC (Annotations/*.xml + JPEGImages/) or instance masks (PNGImages/ + PedMasks/, "
    "or images/ + masks/)"
)


def _locate(path: Path) -> tuple[str, Callable[[], ParsedDataset]]:
    """(format, parser) for a dataset path; CnnkitError when it is none of the layouts."""
    if not path.exists():
        raise CnnkitError(f"data path not found: {path}")
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".json":
            return "coco", lambda: parse_coco([path])
        if suffix in (".yaml", ".yml"):
            return "yolo", lambda: parse_yolo(path)
        raise CnnkitError(f"{path} is not a detection dataset file; give {LAYOUTS_HELP}")
    instances = find_instances_files(path)
    if instances:
        return "coco", lambda: parse_coco(instances)
    data_yaml = find_data_yaml(path)
    if data_yaml is not None:
        return "yolo", lambda: parse_yolo(data_yaml)
    if is_voc(path):
        return "voc", lambda: parse_voc(path)
    if layout_folders(path) is not None:
        return "masks", lambda: parse_masks(path)
    raise CnnkitError(f"{path} is no detection dataset layout cnnkit knows; give {LAYOUTS_HELP}")


def detect_format(path: str | os.PathLike) -> str:
    """The format of a detection dataset path: "coco", "yolo", "voc" or "masks"."""
    return _locate(Path(path).expanduser())[0]


def read_detection(
    path: str | os.PathLike,
    *,
    val_split: float = 0.1,
    seed: int = 0,
    max_size: int | None = None,
    progress: bool = False,
) -> DetectionSplits:
    """Read a detection dataset (any of FORMATS) into train / val / test DetectionSets.

    Validation is the format's own split, else a seeded ``val_split`` of train (0: none). With
    ``max_size``, images longer than that are shrunk to it (boxes scaled; never enlarged).
    """
    check_options(val_split, max_size)
    _, parse = _locate(Path(path).expanduser())
    return build_splits(
        os.fspath(path),
        parse(),
        val_split=val_split,
        seed=seed,
        max_size=max_size,
        progress=progress,
    )
