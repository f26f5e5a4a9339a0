"""Segmentation dataset readers: image + mask PNGs, Pascal VOC palette masks, COCO JSON.

``read_segmentation(path)`` finds the format from the path (``segmentation_format``), decodes
every image and mask once and returns SegmentationSplits in the contract of
cnnkit.tasks.segment.dataset. Where to look, in this order:

- a ``.yaml`` file, or a folder with ``segmentation.yaml``: mask folders and class names from it
  ("masks"; coco128's layout);
- ``SegmentationClass/`` + ``JPEGImages/``: Pascal VOC ("voc");
- ``annotations/instances_*.json`` (or a ``.json`` given): COCO polygons / RLE ("coco");
- ``images/`` + ``masks/`` or ``PNGImages/`` + ``PedMasks/``: mask PNGs ("masks"), their class
  names from ``classes.txt`` / ``classes.yaml``, or instance masks of one class
  (``instances="foreground"``, what Penn-Fudan's layout gets by default).

Files that cannot be used are listed once each in ``skipped`` with the reason and left out: an
unreadable image or mask, an image without a mask (or a mask without an image), a mask whose
size differs from its image's, a mask value that is not a class (nor 255). Nothing is printed.
Only a path that is no known layout, a names or JSON file that cannot be read at all, or a
dataset without one usable pair raises CnnkitError (one line).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from cnnkit.errors import CnnkitError
from cnnkit.tasks.detect.formats.build import check_options
from cnnkit.tasks.detect.formats.coco import find_instances_files
from cnnkit.tasks.segment.dataset import SegmentationSplits
from cnnkit.tasks.segment.formats.build import build_splits
from cnnkit.tasks.segment.formats.coco import parse_coco_masks
from cnnkit.tasks.segment.formats.pairs import (
    INSTANCE_MODES,
    check_instances,
    find_yaml,
    layout_folders,
    parse_pairs,
)
from cnnkit.tasks.segment.formats.records import ParsedSegmentation
from cnnkit.tasks.segment.formats.voc import VOC_CLASSES, is_voc_segmentation, parse_voc

__all__ = [
    "FORMATS",
    "INSTANCE_MODES",
    "VOC_CLASSES",
    "read_segmentation",
    "segmentation_format",
]

FORMATS = ("masks", "voc", "coco")
LAYOUTS_HELP = (
    "images/ + masks/ with classes.txt (or a segmentation.yaml), PNGImages/ + PedMasks/, "
    "Pascal VOC (SegmentationClass/ + JPEGImages/) or COCO (annotations/instances_*.json)"
)


def _locate(path: Path, instances: str) -> tuple[str, Callable[[], ParsedSegmentation]]:
    """(format, parser) for a dataset path; CnnkitError when it is none of the layouts."""
    if not path.exists():
        raise CnnkitError(f"data path not found: {path}")
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".json":
            return "coco", lambda: parse_coco_masks([path])
        if suffix in (".yaml", ".yml"):
            return "masks", lambda: parse_pairs(path, instances)
        raise CnnkitError(f"{path} is not a segmentation dataset file; give {LAYOUTS_HELP}")
    if find_yaml(path) is not None:
        return "masks", lambda: parse_pairs(path, instances)
    if is_voc_segmentation(path):
        return "voc", lambda: parse_voc(path)
    instances_files = find_instances_files(path)
    if instances_files:
        return "coco", lambda: parse_coco_masks(instances_files)
    if layout_folders(path) is not None:
        return "masks", lambda: parse_pairs(path, instances)
    raise CnnkitError(f"{path} is no segmentation dataset layout cnnkit knows; give {LAYOUTS_HELP}")


def segmentation_format(path: str | os.PathLike) -> str:
    """The format of a segmentation dataset path: "masks", "voc" or "coco"."""
    return _locate(Path(path).expanduser(), "auto")[0]


def read_segmentation(
    path: str | os.PathLike,
    *,
    val_split: float = 0.1,
    seed: int = 0,
    max_size: int | None = None,
    instances: str = "auto",
    progress: bool = False,
) -> SegmentationSplits:
    """Read a segmentation dataset (any of FORMATS) into train / val / test SegmentationSets.

    Validation is the format's own split, else a seeded ``val_split`` of train (0: none). With
    ``max_size``, images longer than that are shrunk to it (masks by nearest neighbour; never
    enlarged). ``instances`` says how image + mask PNGs' values read: "classes" (each value a
    class of the names file), "foreground" (object ids of one class -> background / that
    class), "auto" (foreground for Penn-Fudan's PedMasks layout, classes otherwise).
    """
    check_options(val_split, max_size)
    check_instances(instances)
    fmt, parse = _locate(Path(path).expanduser(), instances)
    if fmt != "masks" and instances == "foreground":
        raise CnnkitError(
            f"instances='foreground' reads image + instance mask folders; {path} is {fmt}"
        )
    return build_splits(
        os.fspath(path),
        parse(),
        val_split=val_split,
        seed=seed,
        max_size=max_size,
        progress=progress,
    )
