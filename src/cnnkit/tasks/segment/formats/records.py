"""What a format parser hands to the builder: each image's file and a way to get its mask,
before anything is decoded; and the one reader of class-index mask files."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cnnkit.tasks.detect.formats.masks import UNREADABLE_MASK, open_mask


class MaskError(Exception):
    """A mask that cannot be used; the message is the reason, listed in ``skipped``."""


# (height, width) of the decoded image -> (H, W) uint8 class indices (255 = ignore); raises
# MaskError. A mask file ignores the size (the builder compares); COCO rasterises at it.
MaskSource = Callable[[int, int], np.ndarray]


@dataclass
class SampleRecord:
    """One image file and where its mask comes from."""

    path: str
    mask: MaskSource
    annotation: str  # the mask file or the JSON, for messages (the skipped entry names it)
    declared_size: tuple[int, int] | None = None  # (H, W) a JSON states; checked on decode


@dataclass
class ParsedSegmentation:
    """A format's classes, its splits as sample records, and what the parser had to skip."""

    format: str
    classes: list[str]
    splits: dict[str, list[SampleRecord]]  # "train" / "val" / "test"; unsplit data is "train"
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    notes: list[str] = field(default_factory=list)
    instances: str = "classes"  # how mask values were read: "classes" or "foreground"
    skipped_in: dict[int, str] = field(default_factory=dict)  # index in skipped -> its split


@dataclass(frozen=True)
class FileMask:
    """A MaskSource reading a mask file and turning its stored values into class indices."""

    path: str
    to_classes: Callable[[np.ndarray], np.ndarray]  # stored values -> class indices
    read: Callable[[str], np.ndarray] | None = None  # file -> stored values; read_mask_file

    def __call__(self, height: int, width: int) -> np.ndarray:
        values = (self.read or read_mask_file)(self.path)
        return self.to_classes(values)


_GREY_MODES = {"1", "L", "P", "I", "I;16", "I;16L", "I;16B", "I;16N"}


def read_mask_file(path: str | Path, palette: np.ndarray | None = None) -> np.ndarray:
    """A mask PNG -> (H, W) int64 stored values: a grey or 16-bit file's values, a palette
    file's indices (as VOC stores classes). An RGB file is taken when its channels are equal,
    or, given ``palette`` ((K, 3) colours, index = value), by looking its colours up. Raises
    MaskError for an unreadable file or colours it cannot turn into values."""
    try:
        with open_mask(path) as im:
            if im.mode in _GREY_MODES:
                return np.asarray(im).astype(np.int64)
            if im.mode in ("LA", "La", "PA"):
                return np.asarray(im.getchannel(0)).astype(np.int64)
            rgb = np.asarray(im.convert("RGB")).astype(np.int64)
    except UNREADABLE_MASK as e:
        raise MaskError(f"unreadable mask ({e})") from None
    if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
        return rgb[..., 0]
    if palette is None:
        raise MaskError(
            "colour mask: class masks must hold one value per pixel (grey, palette or 16-bit PNG)"
        )
    return colours_to_values(rgb, palette)


def colours_to_values(rgb: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """(H, W, 3) colours -> (H, W) int64 palette indices; MaskError for a colour not in it."""
    packed = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    colours = palette.astype(np.int64)
    keys = (colours[:, 0] << 16) | (colours[:, 1] << 8) | colours[:, 2]
    order = np.argsort(keys, kind="stable")
    found = np.searchsorted(keys[order], packed).clip(0, len(keys) - 1)
    values = order[found]
    unknown = keys[values] != packed
    if unknown.any():
        shown = ", ".join(f"#{int(c):06x}" for c in np.unique(packed[unknown])[:3])
        raise MaskError(f"colours not in the palette: {shown}")
    return values.astype(np.int64)
