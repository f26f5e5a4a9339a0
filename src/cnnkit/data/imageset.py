"""ImageSet and DataSplits: decoded images held in memory, the unit every later stage consumes."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


def checked_labels(labels: torch.Tensor, n: int, classes: list[str]) -> torch.Tensor:
    """int64 class indices (N,), or for multi-label data float32 multi-hot targets (N, C)
    with one 0/1 column per name in ``classes``."""
    if labels.dim() == 2:
        if labels.shape != (n, len(classes)):
            raise ValueError(f"multi-hot labels must be (N, {len(classes)}) matching the data")
        return labels.to(torch.float32)
    if labels.shape != (n,):
        raise ValueError("labels must be (N,) matching the data (or multi-hot (N, C))")
    return labels.to(torch.int64)


@dataclass
class ImageSet:
    """uint8 images (N, 3, H, W), labels, class names, and source paths if any.

    Labels are int64 class indices (N,), or for multi-label data float32 multi-hot targets
    (N, C), a 0/1 column per class: batching, subsets and device copies treat both alike."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    paths: list[str] | None = None
    # device -> (images, labels) copies made by iterate_batches; not part of equality or repr
    _on_device: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4 or self.images.shape[1] != 3:
            raise ValueError(
                f"images must be uint8 (N, 3, H, W), got {self.images.dtype} "
                f"{tuple(self.images.shape)}"
            )
        self.labels = checked_labels(self.labels, self.images.shape[0], self.classes)
        if not self.images.is_contiguous():
            self.images = self.images.contiguous()

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def multilabel(self) -> bool:
        """True when the labels are multi-hot targets (N, C)."""
        return self.labels.dim() == 2

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of every image."""
        return int(self.images.shape[2]), int(self.images.shape[3])

    def subset(self, indices) -> ImageSet:
        """A new ImageSet of the given indices (a list, array, tensor or slice), in that order."""
        if isinstance(indices, slice):
            idx = torch.arange(len(self))[indices]
        else:
            idx = torch.as_tensor(np.asarray(indices, dtype=np.int64).reshape(-1))
        paths = [self.paths[i] for i in idx.tolist()] if self.paths is not None else None
        return ImageSet(
            self.images.index_select(0, idx),
            self.labels.index_select(0, idx),
            list(self.classes),
            paths,
        )


@dataclass
class FeatureSet(ImageSet):
    """Stored model inputs of any dtype and shape (N, ...), such as a frozen backbone's
    features, batched exactly like images."""

    def __post_init__(self) -> None:
        self.labels = checked_labels(self.labels, self.images.shape[0], self.classes)


@dataclass
class DataSplits:
    """Everything load_data() found: the splits, class names and unreadable files."""

    name: str  # dataset name, or the folder / CSV path given
    classes: list[str]
    train: ImageSet | None
    val: ImageSet | None
    test: ImageSet | None
    val_source: str  # "folder" | "split" | "test" | "none": where validation came from
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
