"""Records -> SegmentationSplits: decode each image once, read or rasterise its mask, check that
they agree in size, shrink both to ``max_size`` and carve the seeded validation split."""

from __future__ import annotations

import numpy as np
import torch
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F
from tqdm import tqdm

from cnnkit.data.decode import ImageDecodeError, decode_image
from cnnkit.errors import CnnkitError
from cnnkit.tasks.detect.formats.build import check_options, decode_bar, pick_validation
from cnnkit.tasks.detect.formats.records import mark_split
from cnnkit.tasks.segment.dataset import SegmentationSet, SegmentationSplits
from cnnkit.tasks.segment.formats.records import MaskError, ParsedSegmentation, SampleRecord


def shrink(image: torch.Tensor, mask: torch.Tensor, max_size: int) -> tuple[torch.Tensor, ...]:
    """Scale an image whose longer side exceeds ``max_size`` down to it (aspect kept,
    antialiased) and its mask by nearest neighbour; smaller ones come back unchanged."""
    height, width = image.shape[1:]
    if max(height, width) <= max_size:
        return image, mask
    scale = max_size / max(height, width)
    size = [max(1, round(height * scale)), max(1, round(width * scale))]
    small = F.resize(image, size, antialias=True)
    small_mask = F.resize(mask[None], size, interpolation=InterpolationMode.NEAREST_EXACT)[0]
    return small, small_mask


def read_sample(record: SampleRecord) -> tuple[np.ndarray, np.ndarray] | tuple[str, str]:
    """(RGB (H, W, 3), class mask (H, W)) of one record, or (file, reason) when unusable."""
    try:
        pixels = decode_image(record.path)
    except ImageDecodeError as e:
        return record.path, str(e)
    height, width = pixels.shape[:2]
    if record.declared_size is not None and tuple(record.declared_size) != (height, width):
        dh, dw = record.declared_size
        return record.path, f"{record.annotation} gives {dw}x{dh} but the image is {width}x{height}"
    try:
        mask = record.mask(height, width)
    except MaskError as e:
        return record.annotation, str(e)
    if mask.shape != (height, width):
        mh, mw = mask.shape
        return record.annotation, f"mask is {mw}x{mh} but its image is {width}x{height}"
    return pixels, mask


def _decode_records(
    records: list[SampleRecord],
    classes: list[str],
    max_size: int | None,
    skipped: list[tuple[str, str]],
    bar: tqdm,
) -> SegmentationSet:
    images, masks, paths, sizes = [], [], [], []
    for record in records:
        bar.update()
        sample = read_sample(record)
        if isinstance(sample[0], str):
            skipped.append(sample)
            continue
        pixels, mask_values = sample
        image = torch.from_numpy(np.array(pixels.transpose(2, 0, 1), order="C"))
        mask = torch.from_numpy(np.ascontiguousarray(mask_values, dtype=np.uint8))
        if max_size is not None:
            image, mask = shrink(image, mask, int(max_size))
        images.append(image)
        masks.append(mask)
        paths.append(record.path)
        sizes.append(tuple(pixels.shape[:2]))
    return SegmentationSet(images, masks, list(classes), paths, sizes)


def build_splits(
    name: str,
    parsed: ParsedSegmentation,
    *,
    val_split: float = 0.1,
    seed: int = 0,
    max_size: int | None = None,
    progress: bool = False,
) -> SegmentationSplits:
    """Decode a parsed dataset into SegmentationSplits (validation: the format's own, else
    seeded)."""
    check_options(val_split, max_size)
    skipped, skipped_in = list(parsed.skipped), dict(parsed.skipped_in)
    notes = list(parsed.notes)
    total = sum(len(r) for r in parsed.splits.values())
    bar = decode_bar(name, total, progress)
    sets: dict[str, SegmentationSet] = {}
    with bar:
        for split, records in parsed.splits.items():
            since = len(skipped)
            data = _decode_records(records, parsed.classes, max_size, skipped, bar)
            mark_split(skipped_in, skipped, since, split)
            if len(data):
                sets[split] = data
            elif records:
                notes.append(f"{split}: none of its {len(records)} images could be read")
    if not sets:
        first = "; ".join(f"{where}: {why}" for where, why in skipped[:3])
        raise CnnkitError(
            f"no readable image and mask pairs in {name}" + (f" (first: {first})" if first else "")
        )
    train, val, val_source = pick_validation(sets.get("train"), sets.get("val"), val_split, seed)
    return SegmentationSplits(
        name=name,
        format=parsed.format,
        classes=list(parsed.classes),
        train=train,
        val=val,
        test=sets.get("test"),
        val_source=val_source,
        skipped=skipped,
        notes=notes,
        instances=parsed.instances,
        skipped_in=skipped_in,
    )
