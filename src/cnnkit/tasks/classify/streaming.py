"""A classifier's training images streamed from disk (cnnkit.data.stream) instead of held in
memory: the splits, a seeded sample for the statistics and the model's data-dependent init, and
each epoch's batches for this rank."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from cnnkit.config import TrainConfig
from cnnkit.data.imageset import DataSplits, ImageSet
from cnnkit.data.stream import (
    StreamEpoch,
    StreamSource,
    default_workers,
    epoch_order,
    materialise,
    report_unreadable,
    stream_steps,
)
from cnnkit.data.stream_splits import StreamPlan, load_stream_splits
from cnnkit.engine import distributed

SAMPLE_IMAGES = 5000  # streamed images decoded for the mean/std and a model's init_from_data


class StreamedTraining:
    """The training split as a stream; validation and test in memory (see stream_splits)."""

    def __init__(self, cfg: TrainConfig, plan: StreamPlan, resize: str) -> None:
        self.workers = cfg.workers if cfg.workers is not None else default_workers()
        self.data: DataSplits = load_stream_splits(
            plan,
            val_split=cfg.val_split,
            seed=cfg.seed,
            image_size=cfg.image_size,
            resize=resize,
            workers=self.workers,
        )
        self.source: StreamSource = self.data.train  # type: ignore[assignment]
        self.skip: set[int] = set()  # unreadable images met (and listed) in earlier epochs
        self._sample: ImageSet | None = None

    def sample(self, seed: int) -> ImageSet:
        """A seeded random sample of up to SAMPLE_IMAGES training images, in memory: what the
        in-memory path's channel statistics and init_from_data read from the whole set."""
        if self._sample is None:
            rng = np.random.Generator(np.random.PCG64(seed))
            picked = rng.permutation(len(self.source))[:SAMPLE_IMAGES]
            self._sample, _ = materialise(self.source, np.sort(picked), self.workers)
        return self._sample

    def steps(self, batch_size: int) -> int:
        return stream_steps(len(self.source), batch_size, distributed.world_size())

    def batches(
        self, batch_size: int, device: torch.device, weights: torch.Tensor | None
    ) -> Callable[[torch.Generator], StreamEpoch]:
        """make_batches for run_epoch: this rank's share of the epoch's global batches."""

        def make(generator: torch.Generator) -> StreamEpoch:
            return StreamEpoch(
                self.source,
                batch_size,
                epoch_order(len(self.source), generator, weights),
                device=device,
                workers=self.workers,
                rank=distributed.rank(),
                world=distributed.world_size(),
                skip=self.skip,
                on_end=self._listed,
            )

        return make

    def _listed(self, unreadable: list[tuple[int, str]]) -> None:
        """The end of an epoch: list what it skipped (every rank's, by rank 0), and skip it
        unread from now on (every rank ends its epoch here together)."""
        everyone = distributed.gather([(int(i), str(why)) for i, why in unreadable])
        unreadable = sorted({item for part in everyone for item in part})
        if distributed.is_main():
            named = report_unreadable(self.source, unreadable)
        else:
            named = [(self.source.name(i), reason) for i, reason in unreadable]
        self.skip.update(i for i, _ in unreadable)
        known = {path for path, _ in self.data.skipped}
        self.data.skipped.extend(item for item in named if item[0] not in known)
