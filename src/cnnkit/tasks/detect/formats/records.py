"""What a format parser hands to the builder: each image's file and objects, before decoding.

Box convention shared by every reader: continuous pixel coordinates in which pixel column c
covers [c, c + 1), so an object whose pixels span columns 3..9 has x1 = 3 and x2 = 10 (COCO's
[x, y, w, h] is already this; VOC's 1-based inclusive corners become (xmin - 1, ymin - 1, xmax,
ymax); a mask object gives (min col, min row, max col + 1, max row + 1)). The same integer-pixel
box therefore reads identically from every format.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from cnnkit.errors import CnnkitError


@dataclass
class ImageRecord:
    """One image file and its objects; boxes (K, 4) x1 y1 x2 y2 in the file's pixels, or in
    fractions of its width and height when ``normalized`` (YOLO)."""

    path: str
    boxes: np.ndarray
    labels: list[int]
    iscrowd: list[bool] | None = None
    normalized: bool = False
    declared_size: tuple[int, int] | None = None  # (H, W) the annotation states; checked on decode
    annotation: str = ""  # the label / XML / mask / JSON file, for messages

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        if self.iscrowd is None:
            self.iscrowd = [False] * len(self.labels)
        if not (len(self.boxes) == len(self.labels) == len(self.iscrowd)):
            raise ValueError("boxes, labels and iscrowd must have one row per object")


@dataclass
class ParsedDataset:
    """A format's classes, its splits as image records, and what the parser had to skip."""

    format: str
    classes: list[str]
    splits: dict[str, list[ImageRecord]]  # "train" / "val" / "test"; unsplit data is "train"
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file[:line], reason)
    notes: list[str] = field(default_factory=list)
    skipped_in: dict[int, str] = field(default_factory=dict)  # index in skipped -> its split


def mark_split(skipped_in: dict[int, str], skipped: list, since: int, split: str) -> None:
    """Say that the entries of ``skipped`` from index ``since`` on belong to ``split``."""
    for i in range(since, len(skipped)):
        skipped_in.setdefault(i, split)


def skipped_of(splits: object, split: str) -> list[tuple[str, str]]:
    """What a reader skipped that concerns ``split``: its own files, those of no one split,
    and, when ``split`` was carved out of train (a seeded validation split), train's."""
    skipped_in: dict[int, str] = getattr(splits, "skipped_in", {})
    carved = split == "val" and getattr(splits, "val_source", "") == "split"
    ours = {split, "train"} if carved else {split}
    return [e for i, e in enumerate(splits.skipped) if skipped_in.get(i, split) in ours]  # type: ignore[attr-defined]


def split_of_name(name: str) -> str | None:
    """ "train" / "val" / "test" from a file or folder name (instances_val2017, trainval,
    valid, ...), or None when the name says none of them."""
    text = name.lower()
    if "test" in text:
        return "test"
    if "train" in text:
        return "train"
    if "val" in text:
        return "val"
    return None


def refuse_repeated_names(names: list[str], source: object) -> None:
    """CnnkitError when two classes share a name: their counts, APs and IoUs would be
    reported under one name, and a prediction could not say which class it means."""
    repeated = [name for name, n in Counter(names).items() if n > 1]
    if repeated:
        shown = ", ".join(f"'{n}'" for n in repeated[:5])
        raise CnnkitError(f"{source} names {shown} more than once: give each class its own name")
