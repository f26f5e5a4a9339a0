"""`cnnkit datasets --inspect PATH --task classify`: a classification dataset's files per split
and class, read from the folder or CSV list without decoding a pixel, and a warning when the
training classes are imbalanced."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnkit.data.sources import read_csv_list, scan_folder
from cnnkit.errors import CnnkitError

IMBALANCE_WARNING = 10.0  # largest / smallest training class above this: say so


@dataclass
class ClassificationInspection:
    path: str
    classes: list[str]
    counts: dict[str, list[int]]  # split -> images per class (multi-label: per label)
    totals: dict[str, int] | None = None  # multi-label: split -> images (each has 0+ labels)

    @property
    def imbalance(self) -> float | None:
        """Largest over smallest training class (inf when a class has none)."""
        train = self.counts.get("train")
        if not train:
            return None
        return max(train) / min(train) if min(train) else float("inf")

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "task": "classify",
            "classes": self.classes,
            "images": {
                split: dict(zip(self.classes, c, strict=True)) for split, c in self.counts.items()
            },
            "imbalance": self.imbalance,
            "multilabel": self.totals is not None,
            **({"totals": self.totals} if self.totals is not None else {}),
        }

    def lines(self) -> list[str]:
        kind = "multi-label classification" if self.totals is not None else "classification"
        out = [f"{self.path}: {kind}, {len(self.classes)} classes"]
        for split, counts in self.counts.items():
            total = self.totals[split] if self.totals is not None else sum(counts)
            out.append(f"  {split}: {total:,} images")
        train = self.counts.get("train")
        if train:
            width = max(len(c) for c in self.classes)
            for name, n in zip(self.classes, train, strict=True):
                out.append(f"    {name:<{width}}  {n:>7,}")
        ratio = self.imbalance
        if ratio is not None and ratio > IMBALANCE_WARNING:
            low = self.classes[train.index(min(train))]
            high = self.classes[train.index(max(train))]
            shown = "no images" if ratio == float("inf") else f"{ratio:.0f}:1"
            out.append(
                f"warning: imbalanced training classes ({shown}: {high} {max(train):,},"
                f" {low} {min(train):,}); consider --class-weights auto or --sampler balanced,"
                " and read balanced accuracy beside top-1"
            )
        return out


def inspect_classification(path: str | os.PathLike) -> ClassificationInspection:
    """The images per split and class of a folder of class folders, a CSV list, or a named
    dataset (cifar10, ...: read as training would read it)."""
    from cnnkit.data.datasets import MULTILABEL_LIST, SAMPLE_NAME, named_dataset, sample_path

    name = named_dataset(path)
    if name is not None and name != SAMPLE_NAME:
        return _inspect_named(name)
    where = sample_path() if name == SAMPLE_NAME else Path(path)
    if where.is_dir() and (where / MULTILABEL_LIST).is_file():
        where = where / MULTILABEL_LIST
    if where.is_dir():
        found = scan_folder(where)
    elif where.is_file() and where.suffix.lower() == ".csv":
        found = read_csv_list(where)
    elif where.is_file() and where.suffix.lower() == ".npz":
        return _inspect_npz(where)
    else:
        raise CnnkitError(
            f"{path}: give a folder of class folders, a CSV list or a MedMNIST-style .npz to "
            "inspect"
        )
    counts, totals = {}, {}
    for split, files in found.lists.items():
        totals[split] = len(files)
        per_class = [0] * len(found.classes)
        for label in files.labels:
            if isinstance(label, list):  # a multi-hot row: count each label it has
                per_class = [n + k for n, k in zip(per_class, label, strict=True)]
            else:
                per_class[label] += 1
        counts[split] = per_class
    multilabel = any(
        isinstance(label, list) for files in found.lists.values() for label in files.labels
    )
    return ClassificationInspection(
        str(path), list(found.classes), counts, totals if multilabel else None
    )


def _inspect_npz(path: Path) -> ClassificationInspection:
    """A MedMNIST-style .npz: its splits' images per class, from the label arrays alone."""
    from cnnkit.data.medmnist import NpzFile

    npz = NpzFile(path)
    counts, totals = {}, {}
    for split in npz.splits:
        labels = npz.labels(split)
        totals[split] = len(labels)
        if npz.multilabel:
            counts[split] = labels.sum(0).astype(int).tolist()
        else:
            counts[split] = np.bincount(labels, minlength=len(npz.classes)).tolist()
    return ClassificationInspection(
        str(path), list(npz.classes), counts, totals if npz.multilabel else None
    )


def _inspect_named(name: str) -> ClassificationInspection:
    from cnnkit.data.datasets import load_data

    data = load_data(name, val_split=0.0, splits=("train", "test"), progress=False)
    counts, totals = {}, {}
    for split in ("train", "test"):
        images = getattr(data, split)
        if images is not None:
            totals[split] = len(images)
            if images.multilabel:  # images per label
                counts[split] = images.labels.sum(0).long().tolist()
            else:
                counts[split] = torch.bincount(images.labels, minlength=len(data.classes)).tolist()
    multilabel = data.train is not None and data.train.multilabel
    return ClassificationInspection(
        name, list(data.classes), counts, totals if multilabel else None
    )
