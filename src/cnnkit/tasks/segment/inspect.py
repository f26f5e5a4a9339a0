"""inspect_segmentation(): what a segmentation dataset holds and what is wrong with it, for
``cnnkit datasets --inspect PATH`` (``lines()``) and its ``--json`` (``to_dict()``).

Pixel shares are counted on the masks as read for inspection (shrunk by nearest neighbour so
the longer side is at most 320 px), which keeps each class's share of its image to within a
few pixels of the original's; image sizes are the files' own.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

import numpy as np

from cnnkit.tasks.detect.inspect import INSPECT_MAX_SIZE, SHOWN_SKIPPED
from cnnkit.tasks.segment.dataset import SegmentationSet, SegmentationSplits
from cnnkit.tasks.segment.formats import read_segmentation

VAL_SOURCES = {"folder": "the dataset's own split", "split": "a seeded split of train"}
SHOWN_CLASS_NAMES = 8


@dataclass
class ClassShare:
    """One class over every split: its share of the labelled (not ignored) pixels, and how
    many images show it at all."""

    pixel_share: float
    images: int


@dataclass
class SegmentationInspection:
    """Summary of a segmentation dataset: splits, classes, sizes, pixel shares and problems."""

    path: str
    format: str
    classes: list[str]
    val_source: str
    splits: dict[str, int]  # split -> images
    image_sizes: dict[str, tuple[int, int]]  # min / median / max -> (W, H), per axis
    class_shares: dict[str, ClassShare]
    ignored_share: float  # of all mask pixels
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def absent_classes(self) -> list[str]:
        """Classes that no mask of any split holds."""
        return [c for c in self.classes if self.class_shares[c].images == 0]

    def to_dict(self) -> dict:
        """Plain JSON-ready data."""
        out = asdict(self)
        out["image_sizes"] = {k: list(v) for k, v in self.image_sizes.items()}
        out["skipped"] = [{"file": f, "reason": r} for f, r in self.skipped]
        out["absent_classes"] = self.absent_classes
        return out

    def lines(self) -> list[str]:
        """The report as printed, one line per entry."""
        more = len(self.classes) - SHOWN_CLASS_NAMES
        names = ", ".join(self.classes[:SHOWN_CLASS_NAMES])
        names += f", ... {more} more" if more > 0 else ""
        out = [
            f"format: {self.format} ({self.path})",
            f"classes: {len(self.classes)} ({names})",
            *(f"{split}: {n} images" for split, n in self.splits.items()),
            f"validation: {VAL_SOURCES.get(self.val_source, self.val_source)}",
        ]
        if self.image_sizes:
            sizes = ", ".join(f"{k} {w} x {h}" for k, (w, h) in self.image_sizes.items())
            out.append(f"image sizes (W x H, per axis): {sizes}")
        out.append(f"pixel share per class (of labelled pixels; {self.ignored_share:.1%} ignored):")
        width = max((len(c) for c in self.classes), default=0)
        for name in self.classes:
            share = self.class_shares[name]
            out.append(f"  {name:<{width}}  {share.pixel_share:6.1%}  in {share.images} images")
        return out + self._problem_lines()

    def _problem_lines(self) -> list[str]:
        problems = []
        if self.skipped:
            n = len(self.skipped)
            problems.append(f"  skipped {n} file{'s' if n != 1 else ''}:")
            problems += [f"    {f}: {r}" for f, r in self.skipped[:SHOWN_SKIPPED]]
            if n > SHOWN_SKIPPED:
                problems.append(f"    ... and {n - SHOWN_SKIPPED} more")
        absent = self.absent_classes
        if absent:
            more = f", ... {len(absent) - 12} more" if len(absent) > 12 else ""
            problems.append(f"  classes no mask holds: {', '.join(absent[:12])}{more}")
        out = ["problems:", *problems] if problems else ["problems: none"]
        if self.notes:
            out += ["notes:", *(f"  {n}" for n in self.notes)]
        return out


def _images_per_class(data: SegmentationSet) -> np.ndarray:
    present = np.zeros(len(data.classes), dtype=np.int64)
    for mask in data.masks:
        values = mask.unique().long().numpy()
        present[values[values < len(data.classes)]] += 1
    return present


def summarize(splits: SegmentationSplits) -> SegmentationInspection:
    """The inspection of splits already read."""
    sets = {
        name: data
        for name, data in (("train", splits.train), ("val", splits.val), ("test", splits.test))
        if data is not None
    }
    pixels = np.zeros(len(splits.classes), dtype=np.int64)
    images = np.zeros(len(splits.classes), dtype=np.int64)
    ignored = 0
    for data in sets.values():
        counts, ignore = data.pixel_counts()
        pixels += counts.numpy()
        ignored += ignore
        images += _images_per_class(data)
    labelled = int(pixels.sum())
    shares = {
        name: ClassShare(float(pixels[i] / labelled) if labelled else 0.0, int(images[i]))
        for i, name in enumerate(splits.classes)
    }
    sizes = np.array([s for d in sets.values() for s in d.original_sizes]).reshape(-1, 2)
    image_sizes = {}
    if len(sizes):
        for key, fn in (("min", np.min), ("median", np.median), ("max", np.max)):
            h, w = fn(sizes, axis=0)
            image_sizes[key] = (int(round(w)), int(round(h)))
    return SegmentationInspection(
        path=splits.name,
        format=splits.format,
        classes=list(splits.classes),
        val_source=splits.val_source,
        splits={name: len(d) for name, d in sets.items()},
        image_sizes=image_sizes,
        class_shares=shares,
        ignored_share=ignored / (labelled + ignored) if labelled + ignored else 0.0,
        skipped=list(splits.skipped),
        notes=list(splits.notes),
    )


def inspect_segmentation(
    path: str | os.PathLike, *, val_split: float = 0.1, seed: int = 0, instances: str = "auto"
) -> SegmentationInspection:
    """Read a segmentation dataset (every image and mask decoded, so bad files show) and
    summarize it."""
    splits = read_segmentation(
        path, val_split=val_split, seed=seed, max_size=INSPECT_MAX_SIZE, instances=instances
    )
    return summarize(splits)
