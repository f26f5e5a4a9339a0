"""The training step and the inference pass, each written once for every precision."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn

from cnnkit.data import ImageSet, iterate_batches
from cnnkit.data.preprocess import Preprocessing
from cnnkit.engine.device import Precision


@dataclass
class EpochProgress:
    """Running totals of one training epoch; saved in last.pt so an epoch can resume mid-way."""

    step: int = 0  # batches finished this epoch
    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0
    seconds: float = 0.0
    generator_state: torch.Tensor | None = None  # shuffle RNG state at the epoch's start

    @property
    def loss(self) -> float:
        return self.loss_sum / max(self.seen, 1)

    @property
    def accuracy(self) -> float:
        return self.correct / max(self.seen, 1)

    @property
    def images_per_second(self) -> float:
        return self.seen / max(self.seconds, 1e-9)

    def to_dict(self) -> dict:
        return asdict(self)


Prepare = Callable[[torch.Tensor], torch.Tensor]  # a stored batch -> the model's input

GPU_SYNC_EVERY = 25  # training steps between read-backs of the running loss on a GPU


@dataclass
class StepContext:
    """What one optimisation step needs besides the model and the batch."""

    prepare: Prepare
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    precision: Precision
    loss_fn: nn.Module
    clip_grad: float = 0.0  # max gradient norm; 0: no clipping
    # (images, labels, step, indices in the data) -> (augmented images, targets: labels or
    # soft (B, C)); None: off
    augment: (
        Callable[[torch.Tensor, torch.Tensor, int, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
        | None
    ) = None


def image_input(preprocessing: Preprocessing, channels_last: bool = False) -> Prepare:
    """uint8 images (B, 3, h, w) -> normalised float input, channels-last if asked."""

    def prepare(images: torch.Tensor) -> torch.Tensor:
        x = preprocessing.to_input(images)  # (B, 3, H, W) float32
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x

    return prepare


def feature_input(features: torch.Tensor) -> torch.Tensor:
    """Cached backbone features (stored compactly) -> float32 head input."""
    return features.float()


def steps_per_epoch(n: int, batch_size: int) -> int:
    return len(range(0, n - (1 if n % batch_size == 1 else 0), batch_size))


def train_one_epoch(
    model: nn.Module,
    data: ImageSet,
    ctx: StepContext,
    batch_size: int,
    generator: torch.Generator,
    progress: EpochProgress,
    should_stop: Callable[[], bool] = lambda: False,
    on_step: Callable[[EpochProgress], None] | None = None,
    sync_every: int | None = None,
) -> EpochProgress:
    """Train over `data` once, continuing from `progress.step`; stops early if should_stop().

    `progress` gets the running loss and accuracy every `sync_every` steps (default: every step
    on the CPU, every GPU_SYNC_EVERY on other devices) and at the end."""
    device = next(model.parameters()).device
    model.train()
    if progress.generator_state is None:
        progress.generator_state = generator.get_state()
    else:  # resuming mid-epoch: replay the same shuffle
        generator.set_state(progress.generator_state)
    # A final batch of one image breaks BatchNorm in training; drop it in that case only.
    batches = iterate_batches(
        data,
        batch_size,
        shuffle=True,
        generator=generator,
        device=device,
        drop_last=len(data) % batch_size == 1,
        with_indices=True,
    )
    # Running totals stay on the device and reach `progress` every `sync_every` steps: on a GPU
    # reading a number back each step (loss.item()) would stall the queue of launched kernels.
    if sync_every is None:
        sync_every = 1 if device.type == "cpu" else GPU_SYNC_EVERY
    loss_sum = torch.zeros((), device=device)  # float32: MPS has no float64
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    since = time.perf_counter()

    def flush() -> None:
        nonlocal seen, since
        if seen:
            progress.loss_sum += float(loss_sum)
            progress.correct += int(correct)
            progress.seen += seen
            loss_sum.zero_()
            correct.zero_()
            seen = 0
        now = time.perf_counter()  # after the read-back above, so GPU work is in the time
        progress.seconds += now - since
        since = now

    for images, labels, indices in itertools.islice(batches, progress.step, None):
        if should_stop():
            break
        targets = labels
        if ctx.augment is not None:
            images, targets = ctx.augment(images, labels, progress.step, indices)
        x = ctx.prepare(images)
        with ctx.precision.autocast():
            logits = model(x)
            loss = ctx.loss_fn(logits, targets)  # cross-entropy takes soft targets as they are
        ctx.optimizer.zero_grad(set_to_none=True)
        ctx.scaler.scale(loss).backward()
        if ctx.clip_grad > 0:
            ctx.scaler.unscale_(ctx.optimizer)  # clip the true gradients, not scaled ones
            params = [p for group in ctx.optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, ctx.clip_grad)
        ctx.scaler.step(ctx.optimizer)
        ctx.scaler.update()
        ctx.scheduler.step()
        n = labels.numel()
        loss_sum += loss.detach().float() * n
        correct += (logits.detach().argmax(1) == labels).sum()
        seen += n
        progress.step += 1
        if progress.step % sync_every == 0:
            flush()
        if on_step is not None:
            on_step(progress)
    flush()
    return progress


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    images: torch.Tensor,
    prepare: Prepare,
    precision: Precision,
    batch_size: int = 256,
) -> torch.Tensor:
    """Outputs (N, ...) as float32 on the CPU for stored images (N, ...), in eval mode."""
    device = next(model.parameters()).device
    model.eval()
    outputs = []
    for i in range(0, len(images), batch_size):
        x = prepare(images[i : i + batch_size].to(device))
        with precision.autocast():
            outputs.append(model(x).float().cpu())
    if not outputs:
        return torch.empty(0, 0)
    return torch.cat(outputs)


def evaluate_epoch(
    model: nn.Module,
    data: ImageSet,
    prepare: Prepare,
    precision: Precision,
    loss_fn: nn.Module,
    batch_size: int = 256,
) -> tuple[float, float]:
    """(mean loss, top-1 accuracy) of `model` on `data`."""
    logits = predict_logits(model, data.images, prepare, precision, batch_size)
    labels = data.labels
    loss = float(loss_fn(logits, labels)) if len(labels) else 0.0
    accuracy = float((logits.argmax(1) == labels).float().mean()) if len(labels) else 0.0
    return loss, accuracy
