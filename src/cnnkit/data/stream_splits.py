"""Whether a run streams its training images, and its splits when it does.

A folder of class folders or a CSV list is streamed when --stream says so, or (neither --stream
nor --no-stream given) when its decoded size is over the memory budget (budget.py); a shard
folder (`cnnkit shard`) is streamed unless --no-stream. Only the training split streams:
validation and test images are decoded into memory once (through the same workers), since they
are read every epoch in full and are usually a small share of the data.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cnnkit.data.budget import decoded_bytes, gib, memory_budget
from cnnkit.data.datasets import MULTILABEL_LIST, named_dataset
from cnnkit.data.imageset import DataSplits, ImageSet
from cnnkit.data.shards import is_shard_folder, read_shard_index, scan_shards
from cnnkit.data.sources import (
    ImageList,
    SourceSplits,
    read_csv_list,
    scan_folder,
    stratified_split,
)
from cnnkit.data.stream import StreamSource, common_size, materialise
from cnnkit.errors import CnnkitError

_WHAT_STREAMS = "--stream reads a folder of class folders, a CSV list or a `cnnkit shard` folder"


@dataclass
class StreamPlan:
    """What a run streams: the file lists of a folder or CSV list, or a shard folder."""

    spec: str
    lists: SourceSplits | None = None
    shards: Path | None = None


def list_source(lst: ImageList, classes: list[str]) -> StreamSource:
    """A stream over the files of one split of a folder or CSV list."""
    names = np.asarray([os.fsencode(p) for p in lst.paths], dtype=bytes)
    return StreamSource(names, torch.as_tensor(lst.labels, dtype=torch.int64), classes, lst.where)


def shard_sources(
    folder: str | os.PathLike,
) -> tuple[list[str], dict[str, StreamSource], list[tuple[str, str]]]:
    """(classes, split -> stream, unreadable samples) of a shard folder."""
    classes, splits = read_shard_index(folder)
    sources, skipped = {}, []
    for split, files in splits.items():
        found = scan_shards(files, len(classes))
        skipped.extend(found.skipped)
        sources[split] = StreamSource(
            found.names,
            torch.from_numpy(found.labels),
            classes,
            f"{split}-*.tar",
            shard_files=found.files,
            shard=found.shard,
            offset=found.offset,
            length=found.length,
        )
    return classes, sources, skipped


def _multilabel(lists: SourceSplits) -> bool:
    return any(lst.labels and isinstance(lst.labels[0], list) for lst in lists.lists.values())


def plan_stream(
    spec: str | os.PathLike,
    stream: bool | None,
    image_size: int | None = None,
    budget: str | None = None,
) -> StreamPlan | None:
    """The plan when this run streams (None: in memory). With `stream` None a folder or CSV
    list streams when its decoded size is over the memory budget; that switch prints a line."""
    text = os.fspath(spec)
    if stream is False and not is_shard_folder(text):
        return None
    path = Path(text).expanduser()
    if named_dataset(spec) is not None or not path.exists():
        if stream:
            raise CnnkitError(f"{_WHAT_STREAMS}; {text} is not one (named datasets load in memory)")
        return None
    if is_shard_folder(path):
        return StreamPlan(text, shards=path) if stream is not False else None
    if path.is_dir():
        listed = path / MULTILABEL_LIST
        lists = read_csv_list(listed) if listed.is_file() else scan_folder(path)
    elif path.suffix.lower() == ".csv":
        lists = read_csv_list(path)
    else:
        if stream:
            raise CnnkitError(f"{_WHAT_STREAMS}; {text} is none of them")
        return None
    if _multilabel(lists):
        if stream:
            raise CnnkitError(f"{text} is multi-label; only single-label data streams")
        return None
    if stream:
        return StreamPlan(text, lists=lists)
    return _over_budget(text, lists, image_size, budget)


def _over_budget(
    text: str, lists: SourceSplits, image_size: int | None, budget: str | None
) -> StreamPlan | None:
    first = next(iter(lists.lists.values()))
    if image_size:
        size = (image_size, image_size)
    else:
        size = common_size(list_source(first, lists.classes))
    images = sum(len(lst) for lst in lists.lists.values())
    needed = decoded_bytes(images, size)
    allowed, chosen = memory_budget(budget)
    if needed <= allowed:
        return None
    print(
        f"cnnkit: {text} decodes to {gib(needed)} ({images} images of {size[0]}x{size[1]}), over "
        f"the memory budget of {gib(allowed)} ({chosen}): streaming it from disk "
        "(--no-stream loads it anyway; --memory-budget sets the budget)"
    )
    return StreamPlan(text, lists=lists)


def load_stream_splits(
    plan: StreamPlan,
    *,
    val_split: float = 0.1,
    seed: int = 0,
    image_size: int | None = None,
    resize: str = "stretch",
    workers: int = 0,
) -> DataSplits:
    """DataSplits whose `train` is a StreamSource; validation and test decoded into memory.
    Validation is a val folder (val shards), else the same seeded stratified split of the
    training files the in-memory path makes, else (val_split 0) the test split."""
    skipped: list[tuple[str, str]] = []
    if plan.shards is not None:
        classes, sources, skipped = shard_sources(plan.shards)
    else:
        assert plan.lists is not None
        classes = list(plan.lists.classes)
        sources = {s: list_source(lst, classes) for s, lst in plan.lists.lists.items()}
    train = sources.get("train")
    if train is None or not len(train):
        raise CnnkitError(f"no training images in {plan.spec}")
    size = (image_size, image_size) if image_size else common_size(train, seed)
    for source in sources.values():
        source.size, source.resize = size, resize

    def in_memory(source: StreamSource, indices: np.ndarray | None = None) -> ImageSet:
        images, bad = materialise(source, indices, workers)
        skipped.extend(bad)
        return images

    val, val_source = None, "none"
    if "val" in sources:
        val, val_source = in_memory(sources["val"]), "folder"
    elif val_split > 0:
        kept, held = stratified_split(train.labels.numpy(), float(val_split), seed)
        val, val_source = in_memory(train, held), "split"
        train = train.subset(kept)
    test = in_memory(sources["test"]) if "test" in sources else None
    if val is None and test is not None:
        val, val_source = test, "test"
    if skipped:
        first = "; ".join(f"{name} ({reason})" for name, reason in skipped[:3])
        more = f"; and {len(skipped) - 3} more" if len(skipped) > 3 else ""
        print(f"cnnkit: skipped {len(skipped)} unreadable item(s): {first}{more}", file=sys.stderr)
    print(
        f"cnnkit: streaming {len(train)} training images from {plan.spec} (decoded to "
        f"{size[0]}x{size[1]} by {workers} worker process{'es' if workers != 1 else ''}); "
        "validation and test held in memory"
    )
    return DataSplits(plan.spec, classes, train, val, test, val_source, skipped)  # type: ignore[arg-type]
