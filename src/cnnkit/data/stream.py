"""Streaming training data: images decoded on the fly in DataLoader worker processes, for data
larger than memory.

An epoch is the in-memory path's: one `torch.randperm(n, generator=generator)` (or, with
per-image weights, `torch.multinomial`) cut into global batches of `batch_size`. Rank r of a
world of w takes `torch.tensor_split(global_batch, w)[r]` of each (the engine's own split of an
in-memory batch), so the ranks' batches of step k together are exactly global batch k; the
DataLoader's workers take whole steps round-robin, which keeps the steps in order. Every rank
yields the same number of batches: a last global batch too small to give each rank 2 images
(BatchNorm needs 2) is dropped on all of them. `start_at(step)` resumes at a global step
without decoding the steps before it.

A file that cannot be decoded is left out of its batch, never a crash; the epoch lists those it
met at its end. Only index arrays (numpy, no per-image Python objects) are held per image, so
the resident memory does not grow with the data beyond them.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from cnnkit.data.decode import ImageDecodeError, decode_image, read_size
from cnnkit.data.imageset import ImageSet
from cnnkit.errors import CnnkitError

MIN_PER_RANK = 2  # images each rank needs in a step (BatchNorm trains on >= 2)
SIZE_SAMPLE = 200  # headers read to find the most common image size
FILL_TRIES = 100  # files after an all-unreadable batch tried for one readable image


@dataclass
class StreamSource:
    """N images read one at a time: the files of a folder or CSV list, or the image members of
    tar shards (`shard_files` with each image's shard, byte offset and length)."""

    names: np.ndarray  # bytes (N,): a file path, or "train-000000.tar:key.png"
    labels: torch.Tensor  # int64 (N,)
    classes: list[str]
    where: str  # for messages: "train/" or "train-*.tar"
    size: tuple[int, int] | None = None  # (H, W) every image is decoded to
    resize: str = "stretch"
    shard_files: list[str] | None = None
    shard: np.ndarray | None = None
    offset: np.ndarray | None = None
    length: np.ndarray | None = None
    multilabel = False
    _fds: dict[int, int] = field(default_factory=dict, repr=False, compare=False)
    _pid: int = field(default=0, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.names)

    def __getstate__(self) -> dict[str, Any]:  # a spawned worker opens its own files
        return {**self.__dict__, "_fds": {}, "_pid": 0}

    def name(self, i: int) -> str:
        return os.fsdecode(self.names[i])

    def encoded(self, i: int) -> str | bytes:
        """Image `i` as decode_image takes it: a path, or a shard member's bytes."""
        if self.shard_files is None:
            return self.name(i)
        assert self.shard is not None and self.offset is not None and self.length is not None
        if self._pid != os.getpid():  # descriptors are per process (pread shares no offset)
            self._fds, self._pid = {}, os.getpid()
        s = int(self.shard[i])
        if s not in self._fds:
            try:
                self._fds[s] = os.open(self.shard_files[s], os.O_RDONLY)
            except OSError as e:
                raise ImageDecodeError(f"cannot open its shard ({e.strerror})") from None
        length = int(self.length[i])
        data = os.pread(self._fds[s], length, int(self.offset[i]))
        if len(data) < length:
            raise ImageDecodeError("truncated shard member")
        return data

    def decode(self, i: int) -> np.ndarray:
        """RGB uint8 (H, W, 3) at `size`, or ImageDecodeError with the reason."""
        return decode_image(self.encoded(i), size=self.size, resize=self.resize)

    def subset(self, indices: np.ndarray) -> StreamSource:
        """The images at `indices` (e.g. the training part of a validation split)."""
        idx = np.asarray(indices, dtype=np.int64)
        pick = lambda a: None if a is None else a[idx]  # noqa: E731
        return StreamSource(
            self.names[idx],
            self.labels[torch.from_numpy(idx)],
            self.classes,
            self.where,
            self.size,
            self.resize,
            self.shard_files,
            pick(self.shard),
            pick(self.offset),
            pick(self.length),
        )


def common_size(source: StreamSource, seed: int = 0) -> tuple[int, int]:
    """The most common (H, W) among the headers of a seeded sample of SIZE_SAMPLE images (the
    in-memory path reads them all; a stream may hold millions)."""
    n = len(source)
    rng = np.random.Generator(np.random.PCG64(seed))
    picked = rng.permutation(n)[:SIZE_SAMPLE] if n > SIZE_SAMPLE else np.arange(n)
    sizes: dict[tuple[int, int], int] = {}
    for i in picked:
        try:
            size = read_size(source.encoded(int(i)))
        except ImageDecodeError:
            continue
        sizes[size] = sizes.get(size, 0) + 1
    if not sizes:
        raise CnnkitError(f"no readable images among {len(picked)} sampled in {source.where}")
    return max(sizes, key=lambda s: sizes[s])


def stream_steps(n: int, batch_size: int, world: int = 1) -> int:
    """Steps of a streamed epoch: full global batches, and the last one if it gives every rank
    at least MIN_PER_RANK images (in a world of 1: unless it holds a single image, as in
    memory)."""
    if batch_size // world < 1:
        raise CnnkitError(f"a global batch of {batch_size} cannot be split over {world} processes")
    full, last = divmod(n, batch_size)
    return full + (1 if last and last // world >= min(MIN_PER_RANK, batch_size // world) else 0)


Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[tuple[int, str]]]


class _BatchReader(IterableDataset):
    """Decodes planned batches (index tensors) in a DataLoader worker: worker w of W takes
    batches w, w + W, ... Yields (images, labels, indices, unreadable (index, reason) pairs)."""

    def __init__(
        self, source: StreamSource, plan: list[torch.Tensor], skip: set[int], fill: bool
    ) -> None:
        self.source, self.plan, self.skip, self.fill = source, plan, skip, fill

    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for j in range(worker, len(self.plan), workers):
            yield self.read(self.plan[j])

    def read(self, indices: torch.Tensor) -> Batch:
        arrays, kept, bad = [], [], []
        for i in indices.tolist():
            if i in self.skip:  # listed in an earlier epoch
                continue
            try:
                arrays.append(self.source.decode(i))
                kept.append(i)
            except ImageDecodeError as e:
                bad.append((i, str(e)))
        if not arrays and self.fill and len(indices):
            self._fill(int(indices[-1]), arrays, kept, bad)
        return self._collate(arrays, kept, bad)

    def _fill(self, after: int, arrays: list, kept: list, bad: list) -> None:
        """A batch of only unreadable files takes the next readable one instead, so every rank
        still steps (an empty batch would stall the others)."""
        n = len(self.source)
        for k in range(1, min(FILL_TRIES, n) + 1):
            i = (after + k) % n
            if i in self.skip:
                continue
            try:
                arrays.append(self.source.decode(i))
                kept.append(i)
                return
            except ImageDecodeError as e:
                bad.append((i, str(e)))

    def _collate(self, arrays: list, kept: list, bad: list) -> Batch:
        h, w = self.source.size or (0, 0)
        if arrays:
            images = torch.from_numpy(np.stack(arrays).transpose(0, 3, 1, 2).copy())
        else:
            images = torch.empty((0, 3, h, w), dtype=torch.uint8)
        index = torch.tensor(kept, dtype=torch.int64)
        return images, self.source.labels[index], index, bad


def _quiet_worker(worker_id: int) -> None:
    """A decoding worker leaves Ctrl-C and SIGTERM to the training process, which stops at a
    step boundary and then shuts its workers down (a worker killed first would fail the run)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _loader(reader: _BatchReader, workers: int, pin: bool) -> DataLoader:
    return DataLoader(
        reader,
        batch_size=None,
        num_workers=workers,
        pin_memory=pin,
        prefetch_factor=4 if workers else None,
        # the workers' base seed from a generator of its own: drawing it from torch's global
        # one would change the model's initialisation (and dropout) against the in-memory path
        generator=torch.Generator().manual_seed(0),
        worker_init_fn=_quiet_worker if workers else None,
    )


class StreamEpoch:
    """One epoch's batches (uint8 images (B, 3, H, W) and int64 labels on `device`, indices
    on the CPU) of this rank, decoded by `workers` processes. `order` is the epoch's global
    order of image indices; `on_end(unreadable)` gets the (index, reason) pairs met."""

    def __init__(
        self,
        source: StreamSource,
        batch_size: int,
        order: torch.Tensor,
        *,
        device: torch.device | str = "cpu",
        workers: int = 0,
        rank: int = 0,
        world: int = 1,
        skip: set[int] | None = None,
        on_end: Callable[[list[tuple[int, str]]], None] | None = None,
        first_step: int = 0,
    ) -> None:
        self.source, self.batch_size, self.order = source, batch_size, order
        self.device = torch.device(device)
        self.workers = workers
        self.rank, self.world = rank, world
        self.skip = set(skip or ())
        self.on_end = on_end
        self.first_step = first_step
        self.steps = stream_steps(len(order), batch_size, self.world)

    def __len__(self) -> int:
        return max(self.steps - self.first_step, 0)

    def start_at(self, step: int) -> StreamEpoch:
        """The same epoch from global step `step` on (a resumed run's position)."""
        return StreamEpoch(
            self.source,
            self.batch_size,
            self.order,
            device=self.device,
            workers=self.workers,
            rank=self.rank,
            world=self.world,
            skip=self.skip,
            on_end=self.on_end,
            first_step=step,
        )

    def rank_indices(self, step: int) -> torch.Tensor:
        """This rank's part of global batch `step`: its tensor_split slice."""
        start = step * self.batch_size
        batch = self.order[start : start + self.batch_size]
        return torch.tensor_split(batch, self.world)[self.rank]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        plan = [self.rank_indices(k) for k in range(self.first_step, self.steps)]
        if not plan:
            return
        reader = _BatchReader(self.source, plan, self.skip, fill=True)
        unreadable: list[tuple[int, str]] = []
        cuda = self.device.type == "cuda"
        for images, labels, indices, bad in _loader(reader, self.workers, pin=cuda):
            unreadable.extend(bad)
            if not len(indices):
                raise CnnkitError(
                    f"{self.source.where}: a batch and the {FILL_TRIES} files after it are all "
                    "unreadable; check the data's files"
                )
            yield (
                images.to(self.device, non_blocking=cuda),
                labels.to(self.device, non_blocking=cuda),
                indices,
            )
        if self.on_end is not None:
            self.on_end(unreadable)


def epoch_order(
    n: int, generator: torch.Generator, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """An epoch's global order, drawn as the in-memory path draws it (iterate_batches)."""
    if weights is not None:
        return torch.multinomial(weights.double(), n, replacement=True, generator=generator)
    return torch.randperm(n, generator=generator)


def materialise(
    source: StreamSource,
    indices: np.ndarray | None = None,
    workers: int = 0,
    chunk: int = 256,
) -> tuple[ImageSet, list[tuple[str, str]]]:
    """Decode the images at `indices` (default all, in order) into an in-memory ImageSet,
    through the same workers; returns it and the (name, reason) of the unreadable ones."""
    idx = torch.as_tensor(np.arange(len(source)) if indices is None else np.asarray(indices))
    plan = list(torch.split(idx.long(), chunk))
    reader = _BatchReader(source, plan, set(), fill=False)
    parts, labels, kept, skipped = [], [], [], []
    for images, batch_labels, batch_indices, bad in _loader(reader, workers, False):
        parts.append(images)
        labels.append(batch_labels)
        kept.extend(batch_indices.tolist())
        skipped.extend((source.name(i), reason) for i, reason in bad)
    h, w = source.size or (0, 0)
    images = torch.cat(parts) if parts else torch.empty((0, 3, h, w), dtype=torch.uint8)
    label_tensor = torch.cat(labels) if labels else torch.empty(0, dtype=torch.int64)
    paths = [source.name(i) for i in kept]
    return ImageSet(images, label_tensor, list(source.classes), paths), skipped


def default_workers() -> int:
    """Decoding processes per training process: the CPUs this process may use (shared by the
    training processes torchrun started on this machine), at most 8."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    cpus //= max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(1, min(cpus, 8))


def report_unreadable(source: StreamSource, unreadable: list[tuple[int, str]]) -> list:
    """Print the files an epoch skipped, one line naming up to three; returns (name, reason)."""
    named = [(source.name(i), reason) for i, reason in unreadable]
    if named:
        first = "; ".join(f"{name} ({reason})" for name, reason in named[:3])
        more = f"; and {len(named) - 3} more" if len(named) > 3 else ""
        print(
            f"cnnkit: this epoch skipped {len(named)} unreadable image(s) in "
            f"{source.where}: {first}{more}",
            file=sys.stderr,
        )
    return named
