"""One training epoch for any task: the task computes a step's losses, the engine steps.

The engine knows no task: it asks the task's step function for a `StepOutput` (named losses, the
first of which is back-propagated, and optional tallies such as correct predictions), then
runs backward, clipping, the optimiser, the scaler and the schedule, and keeps the epoch's
running means. It is written once for every precision: an autocast context that is a no-op in
fp32 and a GradScaler that is disabled unless fp16.

A task that trains several networks in sequence within one step (a GAN: the discriminator, then
the generator) gets named optimisations instead of one: its step is called as
`step(batch, update)` and calls `update(name, loss)` for each update, in its order; each is the
same backward-clip-step path through that name's optimiser, scaler and schedule. Its
`StepOutput.losses` are then only logged.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from cnnkit.engine.device import Precision

GPU_SYNC_EVERY = 25  # training steps between read-backs of the running loss on a GPU


@dataclass
class StepOutput:
    """What one training step computed: named losses (means over the batch; the first is the
    total that is back-propagated), the batch size, and tallies summed over the epoch and
    reported per sample (e.g. {"accuracy": number of correct predictions})."""

    losses: dict[str, torch.Tensor]
    size: int
    tallies: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def total(self) -> torch.Tensor:
        return next(iter(self.losses.values()))


@dataclass
class EpochProgress:
    """Running totals of one training epoch; saved in last.pt so an epoch can resume mid-way.

    `sums` holds each loss item times its batch size and each tally, summed; their means per
    sample are the epoch's train_<name> figures."""

    step: int = 0  # batches finished this epoch
    seen: int = 0
    seconds: float = 0.0
    generator_state: torch.Tensor | None = None  # shuffle RNG state at the epoch's start
    sums: dict[str, float] = field(default_factory=dict)

    def mean(self, name: str) -> float:
        return self.sums.get(name, 0.0) / max(self.seen, 1)

    def means(self) -> dict[str, float]:
        return {name: self.mean(name) for name in self.sums}

    @property
    def loss(self) -> float:
        return self.mean("loss")

    @property
    def accuracy(self) -> float:
        return self.mean("accuracy")

    @property
    def loss_sum(self) -> float:
        return self.sums.get("loss", 0.0)

    @property
    def correct(self) -> int:
        return int(self.sums.get("accuracy", 0))

    @property
    def finite(self) -> bool:
        """Whether every running sum is still a finite number (no loss diverged)."""
        return all(math.isfinite(value) for value in self.sums.values())

    def first_non_finite(self) -> str:
        """'name value' of the first diverged running mean, for the error line."""
        for name in self.sums:
            if not math.isfinite(self.sums[name]):
                return f"{name} {self.mean(name)}"
        return f"loss {self.loss}"

    @property
    def images_per_second(self) -> float:
        return self.seen / max(self.seconds, 1e-9)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> EpochProgress:
        """From last.pt; a format-1 file kept `loss_sum` and `correct` instead of `sums`."""
        values = dict(values)
        sums = dict(values.pop("sums", None) or {})
        if "loss_sum" in values:
            sums["loss"] = float(values.pop("loss_sum"))
        if "correct" in values:
            sums["accuracy"] = float(values.pop("correct"))
        return cls(**values, sums=sums)


@dataclass
class Optimization:
    """What turns a step's loss into an update, besides the model."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    precision: Precision
    clip_grad: float = 0.0  # max gradient norm; 0: no clipping
    # averages the gradients over torchrun's ranks after backward, where DDP does not wrap the
    # networks (a GAN's, which one step runs in turn); None: no averaging, or DDP's own
    sync: Callable[[torch.optim.Optimizer], None] | None = None

    def step(self, loss: torch.Tensor) -> None:
        """Backward, clip, step the optimiser (through the scaler) and the schedule."""
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.sync is not None:
            self.sync(self.optimizer)
        if self.clip_grad > 0:
            self.scaler.unscale_(self.optimizer)  # clip the true gradients, not scaled ones
            params = [p for group in self.optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()


Update = Callable[[str, torch.Tensor], None]  # update(name, loss): one named optimisation's step


def run_epoch(
    step: Callable[..., StepOutput],
    make_batches: Callable[[torch.Generator], Iterable[Any]],
    opt: Optimization | dict[str, Optimization],
    generator: torch.Generator,
    progress: EpochProgress,
    device: torch.device,
    should_stop: Callable[[], bool] = lambda: False,
    on_step: Callable[[EpochProgress], None] | None = None,
    sync_every: int | None = None,
    stop_on_non_finite: bool = True,
) -> EpochProgress:
    """Train over the batches `make_batches(generator)` yields, continuing from `progress.step`;
    stops early if should_stop(). `step(batch)` is the task's: it returns the batch's losses.
    With named optimisations (a dict) the step is called as `step(batch, update)` and updates
    the networks itself through `update(name, loss)`.

    `progress` gets the running sums every `sync_every` steps (default: every step on the CPU,
    every GPU_SYNC_EVERY on other devices) and at the end; a loss that is no longer finite at
    such a read-back ends the epoch there (the trainer then stops the run in one line), unless
    `stop_on_non_finite` is off: under torchrun the ranks agree on stopping in `should_stop`,
    so that no rank leaves the loop alone."""
    if progress.generator_state is None:
        progress.generator_state = generator.get_state()
    else:  # resuming mid-epoch: replay the same shuffle
        generator.set_state(progress.generator_state)
    batches = make_batches(generator)
    # resuming mid-epoch: a streaming source jumps to its position (`start_at(step)`) instead
    # of decoding the finished batches again; in-memory batches are simply skipped
    start_at = getattr(batches, "start_at", None)
    if callable(start_at):
        batches, skip = start_at(progress.step), None
    else:
        skip = progress.step
    # Running sums stay on the device and reach `progress` every `sync_every` steps: on a GPU
    # reading a number back each step (loss.item()) would stall the queue of launched kernels.
    if sync_every is None:
        sync_every = 1 if device.type == "cpu" else GPU_SYNC_EVERY
    sums: dict[str, torch.Tensor] = {}
    seen = 0
    since = time.perf_counter()

    def flush() -> None:
        nonlocal seen, since
        if seen:
            for name, value in sums.items():
                progress.sums[name] = progress.sums.get(name, 0.0) + float(value)
                value.zero_()
            progress.seen += seen
            seen = 0
        now = time.perf_counter()  # after the read-back above, so GPU work is in the time
        progress.seconds += now - since
        since = now

    def add(name: str, value: torch.Tensor) -> None:
        if name not in sums:  # float32: MPS has no float64
            sums[name] = torch.zeros((), device=device)
        sums[name] += value.detach().float()

    def update(name: str, loss: torch.Tensor) -> None:
        opt[name].step(loss)  # type: ignore[index]

    for batch in itertools.islice(batches, skip, None):
        if should_stop():
            break
        if isinstance(opt, Optimization):
            out = step(batch)
            opt.step(out.total)
        else:
            out = step(batch, update)
        for name, loss in out.losses.items():
            add(name, loss * out.size)
        for name, tally in out.tallies.items():
            add(name, tally)
        seen += out.size
        progress.step += 1
        if progress.step % sync_every == 0:
            flush()
            if stop_on_non_finite and not progress.finite:  # diverged: the caller stops
                break
        if on_step is not None:
            on_step(progress)
    flush()
    return progress
