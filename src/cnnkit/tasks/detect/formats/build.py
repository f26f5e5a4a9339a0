"""Records -> DetectionSplits: decode each image once, put its boxes in its pixels, clip them,
drop empty ones, shrink to ``max_size`` and carve the seeded validation split."""

from __future__ import annotations

import sys
from typing import Any, Protocol, TypeVar

import numpy as np
import torch
from torchvision.transforms.v2 import functional as F
from tqdm import tqdm

from cnnkit.data.decode import ImageDecodeError, decode_image
from cnnkit.errors import CnnkitError
from cnnkit.tasks.detect.dataset import BoxTarget, DetectionSet, DetectionSplits
from cnnkit.tasks.detect.formats.records import ImageRecord, ParsedDataset, mark_split

# YOLO's 6-decimal fractions overshoot the border by a few thousandths of a pixel; clipping that
# much is rounding, not a box that really reached outside its image.
CLIP_TOLERANCE = 0.01


class _Counts:
    def __init__(self) -> None:
        self.clipped = 0
        self.dropped = 0


def check_options(val_split: float, max_size: int | None) -> None:
    """Refuse a val_split outside [0, 1) or a max_size that is not a positive integer."""
    if not 0.0 <= float(val_split) < 1.0:
        raise CnnkitError(f"val_split must be in [0, 1), got {val_split}")
    if max_size is not None and (int(max_size) != max_size or int(max_size) <= 0):
        raise CnnkitError(f"max_size must be a positive number of pixels, got {max_size}")


def pixel_boxes(record: ImageRecord, height: int, width: int, counts: _Counts) -> BoxTarget:
    """The record's objects in pixels of a (height, width) image, clipped, empty ones dropped."""
    boxes = record.boxes.copy()
    if record.normalized:
        boxes *= np.array([width, height, width, height], dtype=np.float64)
    limit = np.array([width, height, width, height], dtype=np.float64)
    outside = (boxes < -CLIP_TOLERANCE) | (boxes > limit + CLIP_TOLERANCE)
    boxes = np.clip(boxes, 0.0, limit)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    counts.dropped += int((~keep).sum())
    counts.clipped += int((outside.any(axis=1) & keep).sum())
    labels = np.asarray(record.labels, dtype=np.int64).reshape(-1)[keep]
    crowd = np.asarray(record.iscrowd, dtype=bool).reshape(-1)[keep]
    return BoxTarget(
        torch.from_numpy(boxes[keep]), torch.from_numpy(labels), torch.from_numpy(crowd)
    )


def shrink(image: torch.Tensor, target: BoxTarget, max_size: int) -> tuple[torch.Tensor, BoxTarget]:
    """Scale an image whose longer side exceeds ``max_size`` down to it (aspect kept,
    antialiased) and its boxes with it; smaller images come back unchanged."""
    height, width = image.shape[1:]
    if max(height, width) <= max_size:
        return image, target
    scale = max_size / max(height, width)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    small = F.resize(image, [new_h, new_w], antialias=True)
    return small, target.scaled(new_w / width, new_h / height)


def seeded_split(count: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, val) indices: a seeded ``fraction`` of ``count`` images for validation (at least
    one when fraction > 0 and there are two or more images), both in file order."""
    if fraction <= 0 or count < 2:
        return list(range(count)), []
    n_val = min(count - 1, max(1, round(count * fraction)))
    order = np.random.default_rng(seed).permutation(count)
    val = sorted(int(i) for i in order[:n_val])
    chosen = set(val)
    return [i for i in range(count) if i not in chosen], val


class Subsettable(Protocol):
    def __len__(self) -> int: ...
    def subset(self, indices: list[int]) -> Any: ...


SetT = TypeVar("SetT", bound=Subsettable)


def pick_validation(
    train: SetT | None, val: SetT | None, val_split: float, seed: int
) -> tuple[SetT | None, SetT | None, str]:
    """(train, val, val_source): the format's own val ("folder"), else a seeded ``val_split``
    of train ("split"), else none ("none"). Shared by the detection and segmentation readers."""
    if val is not None:
        return train, val, "folder"
    if train is not None and val_split > 0 and len(train) >= 2:
        train_idx, val_idx = seeded_split(len(train), float(val_split), seed)
        return train.subset(train_idx), train.subset(val_idx), "split"
    return train, None, "none"


def decode_bar(name: str, total: int, progress: bool) -> tqdm:
    """The up-front decoding's progress bar on stderr (off unless ``progress``)."""
    return tqdm(
        total=total,
        desc=f"decoding {name}",
        unit="img",
        file=sys.stderr,
        leave=False,
        disable=None if progress else True,
        mininterval=0.5,
    )


def _decode_records(
    records: list[ImageRecord],
    classes: list[str],
    max_size: int | None,
    counts: _Counts,
    skipped: list[tuple[str, str]],
    bar: tqdm,
) -> DetectionSet:
    images, targets, paths, sizes = [], [], [], []
    for record in records:
        bar.update()
        try:
            pixels = decode_image(record.path)
        except ImageDecodeError as e:
            skipped.append((record.path, str(e)))
            continue
        height, width = pixels.shape[:2]
        if record.declared_size is not None and tuple(record.declared_size) != (height, width):
            dh, dw = record.declared_size
            where = record.annotation or "its annotation"
            skipped.append(
                (record.path, f"{where} gives {dw}x{dh} but the image is {width}x{height}")
            )
            continue
        target = pixel_boxes(record, height, width, counts)
        image = torch.from_numpy(np.array(pixels.transpose(2, 0, 1), order="C"))
        if max_size is not None:
            image, target = shrink(image, target, int(max_size))
        images.append(image)
        targets.append(target)
        paths.append(record.path)
        sizes.append((height, width))
    return DetectionSet(images, targets, list(classes), paths, sizes)


def build_splits(
    name: str,
    parsed: ParsedDataset,
    *,
    val_split: float = 0.1,
    seed: int = 0,
    max_size: int | None = None,
    progress: bool = False,
) -> DetectionSplits:
    """Decode a parsed dataset into DetectionSplits (validation: the format's own, else seeded)."""
    check_options(val_split, max_size)
    skipped, skipped_in = list(parsed.skipped), dict(parsed.skipped_in)
    notes = list(parsed.notes)
    counts = _Counts()
    total = sum(len(r) for r in parsed.splits.values())
    bar = decode_bar(name, total, progress)
    sets: dict[str, DetectionSet] = {}
    with bar:
        for split, records in parsed.splits.items():
            since = len(skipped)
            data = _decode_records(records, parsed.classes, max_size, counts, skipped, bar)
            mark_split(skipped_in, skipped, since, split)
            if len(data):
                sets[split] = data
            elif records:
                notes.append(f"{split}: none of its {len(records)} images could be read")
    if not sets:
        first = "; ".join(f"{where}: {why}" for where, why in skipped[:3])
        raise CnnkitError(f"no readable images in {name}" + (f" (first: {first})" if first else ""))
    train, val, val_source = pick_validation(sets.get("train"), sets.get("val"), val_split, seed)
    return DetectionSplits(
        name=name,
        format=parsed.format,
        classes=list(parsed.classes),
        train=train,
        val=val,
        test=sets.get("test"),
        val_source=val_source,
        skipped=skipped,
        skipped_in=skipped_in,
        dropped_boxes=counts.dropped,
        clipped_boxes=counts.clipped,
        notes=notes,
    )
