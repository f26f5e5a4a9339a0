"""Detection data in memory: images at their stored sizes with their boxes, and the splits.

The contract every reader (COCO, YOLO, VOC, masks) fills and the detection task consumes:

- ``DetectionSet.images[i]``: uint8 (3, h, w), the photo as stored (decoded once, up front; a
  reader may shrink it so that its longer side is at most ``max_size``, never enlarge it).
- ``DetectionSet.targets[i]``: ``BoxTarget`` in that stored image's pixels, (x1, y1, x2, y2),
  x2 > x1 and y2 > y1 (clipped to the image; zero-area boxes dropped and counted by the reader).
- ``DetectionSet.original_sizes[i]``: (H, W) of the file on disk, so predictions and metrics can
  be given in the original image's pixels (scale = original / stored, per axis).
- class indices are 0-based positions in ``classes`` (background is not a class here; a model
  that needs a background index adds it itself).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class BoxTarget:
    """The objects of one image: boxes (K, 4) float32 x1 y1 x2 y2, labels (K,) int64, and
    COCO's crowd flag (K,) bool (crowd boxes are neither matched nor missed by mAP)."""

    boxes: torch.Tensor
    labels: torch.Tensor
    iscrowd: torch.Tensor | None = None

    def __post_init__(self) -> None:
        self.boxes = torch.as_tensor(self.boxes, dtype=torch.float32).reshape(-1, 4)
        self.labels = torch.as_tensor(self.labels, dtype=torch.int64).reshape(-1)
        if self.iscrowd is None:
            self.iscrowd = torch.zeros(len(self.labels), dtype=torch.bool)
        self.iscrowd = torch.as_tensor(self.iscrowd, dtype=torch.bool).reshape(-1)
        if not (len(self.boxes) == len(self.labels) == len(self.iscrowd)):
            raise ValueError("boxes, labels and iscrowd must have one row per object")

    def __len__(self) -> int:
        return len(self.labels)

    def scaled(self, sx: float, sy: float) -> BoxTarget:
        """The same objects with x coordinates times sx and y times sy."""
        factor = torch.tensor([sx, sy, sx, sy], dtype=torch.float32)
        return BoxTarget(self.boxes * factor, self.labels.clone(), self.iscrowd.clone())

    def to_dict(self) -> dict[str, torch.Tensor]:
        return {"boxes": self.boxes, "labels": self.labels, "iscrowd": self.iscrowd}


@dataclass
class DetectionSet:
    """Images of any sizes with their boxes, their source paths and their sizes on disk."""

    images: list[torch.Tensor]
    targets: list[BoxTarget]
    classes: list[str]
    paths: list[str]
    original_sizes: list[tuple[int, int]]

    def __post_init__(self) -> None:
        n = len(self.images)
        if not (len(self.targets) == len(self.paths) == len(self.original_sizes) == n):
            raise ValueError("images, targets, paths and original_sizes must have one per image")
        for image in self.images:
            if image.dtype != torch.uint8 or image.dim() != 3 or image.shape[0] != 3:
                raise ValueError(f"images must be uint8 (3, h, w), got {image.dtype} {image.shape}")

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, indices) -> DetectionSet:
        idx = [int(i) for i in indices]
        return DetectionSet(
            [self.images[i] for i in idx],
            [self.targets[i] for i in idx],
            list(self.classes),
            [self.paths[i] for i in idx],
            [self.original_sizes[i] for i in idx],
        )

    def stored_scale(self, i: int) -> tuple[float, float]:
        """(sx, sy): original pixels per stored pixel of image i."""
        height, width = self.original_sizes[i]
        return width / self.images[i].shape[2], height / self.images[i].shape[1]

    def box_count(self) -> int:
        return sum(len(t) for t in self.targets)


@dataclass
class DetectionSplits:
    """What a detection reader found: the splits, class names, and what it had to skip."""

    name: str  # the path given
    format: str  # "coco" | "yolo" | "voc" | "masks"
    classes: list[str]
    train: DetectionSet | None
    val: DetectionSet | None
    test: DetectionSet | None
    val_source: str  # "folder" (the format's own split) | "split" (seeded) | "none"
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file[:line], reason)
    skipped_in: dict[int, str] = field(default_factory=dict)  # index in skipped -> its split
    dropped_boxes: int = 0  # zero-area boxes (after clipping) left out
    clipped_boxes: int = 0  # boxes that reached outside their image, clipped to it
    notes: list[str] = field(default_factory=list)  # one-line remarks (e.g. a val split replaced)
