"""Segmentation data in memory: images at their stored sizes with a class mask each, and the
splits.

The contract every reader (image + mask PNGs, Pascal VOC, COCO JSON) fills and the segmentation
task consumes:

- ``SegmentationSet.images[i]``: uint8 (3, h, w), the photo as stored (decoded once, up front; a
  reader may shrink it so that its longer side is at most ``max_size``, never enlarge it).
- ``SegmentationSet.masks[i]``: (h, w) class indices at the same stored size: 0..C-1 index
  ``classes``, ``IGNORE_INDEX`` (255) marks pixels no loss or metric may count (VOC's borders,
  unlabelled pixels, what a zoom-out or rotation uncovers). Readers give uint8 (so at most 255
  classes); int64 masks are accepted too (what a caller may build). A mask is shrunk with its
  image by nearest neighbour, so it never holds a value that is not a class or 255.
- ``SegmentationSet.original_sizes[i]``: (H, W) of the file on disk, so predictions can be given
  at the original image's size (scale = original / stored, per axis).
- ``classes`` lists every class a mask may hold, background included where the format has one
  (VOC's and COCO's "background" is class 0; Penn-Fudan is ["background", "person"]); which
  stored values became which index, and which became ignore, is in the splits' ``notes``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

IGNORE_INDEX = 255  # mask value that no loss or metric counts
MAX_CLASSES = 255  # class indices 0..254; 255 is ignore


@dataclass
class SegmentationSet:
    """Images of any sizes with their class masks, their source paths and their sizes on disk."""

    images: list[torch.Tensor]
    masks: list[torch.Tensor]
    classes: list[str]
    paths: list[str]
    original_sizes: list[tuple[int, int]]

    def __post_init__(self) -> None:
        n = len(self.images)
        if not (len(self.masks) == len(self.paths) == len(self.original_sizes) == n):
            raise ValueError("images, masks, paths and original_sizes must have one per image")
        for image, mask in zip(self.images, self.masks, strict=True):
            if image.dtype != torch.uint8 or image.dim() != 3 or image.shape[0] != 3:
                raise ValueError(f"images must be uint8 (3, h, w), got {image.dtype} {image.shape}")
            if mask.dtype not in (torch.uint8, torch.int64) or mask.shape != image.shape[1:]:
                raise ValueError(
                    f"masks must be uint8 or int64 (h, w) of their image's size, got "
                    f"{mask.dtype} {tuple(mask.shape)} for an image of {tuple(image.shape[1:])}"
                )

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, indices) -> SegmentationSet:
        idx = [int(i) for i in indices]
        return SegmentationSet(
            [self.images[i] for i in idx],
            [self.masks[i] for i in idx],
            list(self.classes),
            [self.paths[i] for i in idx],
            [self.original_sizes[i] for i in idx],
        )

    def stored_scale(self, i: int) -> tuple[float, float]:
        """(sx, sy): original pixels per stored pixel of image i."""
        height, width = self.original_sizes[i]
        return width / self.images[i].shape[2], height / self.images[i].shape[1]

    def pixel_counts(self) -> tuple[torch.Tensor, int]:
        """(pixels of each class over all stored masks, int64 (C,); ignored pixels)."""
        counts = torch.zeros(IGNORE_INDEX + 1, dtype=torch.int64)
        for mask in self.masks:
            counts += torch.bincount(mask.reshape(-1).long(), minlength=IGNORE_INDEX + 1)[
                : IGNORE_INDEX + 1
            ]
        return counts[: len(self.classes)].clone(), int(counts[IGNORE_INDEX])


@dataclass
class SegmentationSplits:
    """What a segmentation reader found: the splits, class names, and what it had to skip."""

    name: str  # the path given
    format: str  # "masks" (image + mask PNGs) | "voc" | "coco"
    classes: list[str]
    train: SegmentationSet | None
    val: SegmentationSet | None
    test: SegmentationSet | None
    val_source: str  # "folder" (the format's own split) | "split" (seeded) | "none"
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason), one per file
    notes: list[str] = field(default_factory=list)  # how values were mapped, splits replaced, ...
    skipped_in: dict[int, str] = field(default_factory=dict)  # index in skipped -> its split
    instances: str = "classes"  # how mask values were read: "classes" or "foreground"
