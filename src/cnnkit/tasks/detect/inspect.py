"""inspect_detection(): what a detection dataset holds and what is wrong with it, for
``cnnkit datasets --inspect PATH`` (``lines()``) and its ``--json`` (``to_dict()``)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

import numpy as np

from cnnkit.tasks.detect.dataset import DetectionSet, DetectionSplits
from cnnkit.tasks.detect.formats import read_detection

SMALL_AREA = 32**2  # COCO's thresholds on box area in original pixels
LARGE_AREA = 96**2
INSPECT_MAX_SIZE = 320  # images are held shrunk while inspecting; statistics use original pixels
SHOWN_SKIPPED = 20

_VAL_SOURCES = {
    "folder": "the dataset's own split",
    "split": "a seeded split of train",
    "none": "none",
}


@dataclass
class SplitSummary:
    """Counts of one split."""

    images: int
    background: int  # images without any box
    boxes: int
    crowd: int  # crowd / difficult boxes (ignored by mAP)


@dataclass
class DetectionInspection:
    """Summary of a detection dataset: splits, classes, sizes and problems."""

    path: str
    format: str
    classes: list[str]
    val_source: str
    splits: dict[str, SplitSummary]
    boxes_per_class: dict[str, dict[str, int]]  # class -> split -> boxes
    image_sizes: dict[str, tuple[int, int]]  # min / median / max -> (W, H), per axis
    box_sizes: dict[str, int]  # small / medium / large by COCO's area thresholds
    skipped: list[tuple[str, str]] = field(default_factory=list)
    clipped_boxes: int = 0
    dropped_boxes: int = 0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """Plain JSON-ready data."""
        out = asdict(self)
        out["image_sizes"] = {k: list(v) for k, v in self.image_sizes.items()}
        out["skipped"] = [{"file": f, "reason": r} for f, r in self.skipped]
        return out

    def lines(self) -> list[str]:
        """The report as printed, one line per entry."""
        out = [
            f"format: {self.format} ({self.path})",
            f"classes: {len(self.classes)} ({_names(self.classes)})",
        ]
        for split, s in self.splits.items():
            crowd = f", {s.crowd} crowd/difficult" if s.crowd else ""
            out.append(
                f"{split}: {s.images} images ({s.background} background), {s.boxes} boxes{crowd}"
            )
        out.append(f"validation: {_VAL_SOURCES.get(self.val_source, self.val_source)}")
        if self.image_sizes:
            sizes = ", ".join(f"{k} {w} x {h}" for k, (w, h) in self.image_sizes.items())
            out.append(f"image sizes (W x H, per axis): {sizes}")
        total = sum(self.box_sizes.values())
        if total:
            parts = ", ".join(
                f"{k} {n} ({100 * n / total:.0f}%)" for k, n in self.box_sizes.items()
            )
            out.append(f"box sizes (COCO areas < 32², < 96², larger): {parts}")
        out.append("boxes per class:")
        width = max((len(c) for c in self.classes), default=0)
        for name in self.classes:
            counts = self.boxes_per_class.get(name, {})
            per_split = ", ".join(f"{s} {n}" for s, n in counts.items())
            out.append(f"  {name:<{width}}  {sum(counts.values()):>6}  ({per_split})")
        out += self._problem_lines()
        return out

    def _problem_lines(self) -> list[str]:
        problems = []
        if self.skipped:
            n = len(self.skipped)
            problems.append(f"  skipped {n} file{'s' if n != 1 else ''}:")
            problems += [f"    {f}: {r}" for f, r in self.skipped[:SHOWN_SKIPPED]]
            if n > SHOWN_SKIPPED:
                problems.append(f"    ... and {n - SHOWN_SKIPPED} more")
        if self.clipped_boxes:
            problems.append(f"  {self.clipped_boxes} boxes reached outside their image (clipped)")
        if self.dropped_boxes:
            problems.append(f"  {self.dropped_boxes} boxes had no area (dropped)")
        out = ["problems:", *problems] if problems else ["problems: none"]
        if self.notes:
            out += ["notes:", *(f"  {n}" for n in self.notes)]
        return out


def _summary(data: DetectionSet) -> SplitSummary:
    return SplitSummary(
        images=len(data),
        background=sum(1 for t in data.targets if len(t) == 0),
        boxes=data.box_count(),
        crowd=sum(int(t.iscrowd.sum()) for t in data.targets),
    )


def _original_areas(data: DetectionSet) -> np.ndarray:
    """Box areas in the original files' pixels."""
    areas = []
    for i, t in enumerate(data.targets):
        sx, sy = data.stored_scale(i)
        wh = (t.boxes[:, 2:] - t.boxes[:, :2]).numpy()
        areas.append(wh[:, 0] * sx * wh[:, 1] * sy)
    return np.concatenate(areas) if areas else np.zeros(0)


def summarize(splits: DetectionSplits) -> DetectionInspection:
    """The inspection of splits already read."""
    sets = {
        name: data
        for name, data in (("train", splits.train), ("val", splits.val), ("test", splits.test))
        if data is not None
    }
    per_class: dict[str, dict[str, int]] = {c: {} for c in splits.classes}
    for split, data in sets.items():
        labels = np.concatenate([t.labels.numpy() for t in data.targets] or [np.zeros(0, int)])
        counts = np.bincount(labels.astype(np.int64), minlength=len(splits.classes))
        for name, n in zip(splits.classes, counts.tolist(), strict=True):
            per_class[name][split] = n
    sizes = np.array([s for d in sets.values() for s in d.original_sizes]).reshape(-1, 2)
    image_sizes = {}
    if len(sizes):
        for key, fn in (("min", np.min), ("median", np.median), ("max", np.max)):
            h, w = fn(sizes, axis=0)
            image_sizes[key] = (int(round(w)), int(round(h)))
    areas = np.concatenate([_original_areas(d) for d in sets.values()] or [np.zeros(0)])
    box_sizes = {
        "small": int((areas < SMALL_AREA).sum()),
        "medium": int(((areas >= SMALL_AREA) & (areas < LARGE_AREA)).sum()),
        "large": int((areas >= LARGE_AREA).sum()),
    }
    return DetectionInspection(
        path=splits.name,
        format=splits.format,
        classes=list(splits.classes),
        val_source=splits.val_source,
        splits={name: _summary(d) for name, d in sets.items()},
        boxes_per_class=per_class,
        image_sizes=image_sizes,
        box_sizes=box_sizes,
        skipped=list(splits.skipped),
        clipped_boxes=splits.clipped_boxes,
        dropped_boxes=splits.dropped_boxes,
        notes=list(splits.notes),
    )


def inspect_detection(
    path: str | os.PathLike, *, val_split: float = 0.1, seed: int = 0
) -> DetectionInspection:
    """Read a detection dataset (every image decoded, so corrupt files show) and summarize it."""
    return summarize(
        read_detection(path, val_split=val_split, seed=seed, max_size=INSPECT_MAX_SIZE)
    )


def _names(classes: list[str], shown: int = 8) -> str:
    """The first few class names, and how many more."""
    more = len(classes) - shown
    return ", ".join(classes[:shown]) + (f", ... {more} more" if more > 0 else "")
