"""Classification's training step and inference pass, on the engine's epoch loop."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.data import ImageSet, iterate_batches
from cnnkit.data.preprocess import Preprocessing
from cnnkit.engine.device import Precision
from cnnkit.engine.distributed import evaluation_share, gather_rows
from cnnkit.engine.loop import EpochProgress, Optimization, StepOutput, run_epoch
from cnnkit.tasks.classify.multilabel import label_tally

Prepare = Callable[[torch.Tensor], torch.Tensor]  # a stored batch -> the model's input
# (images, labels, step, indices in the data) -> (augmented images, targets: labels or soft (B, C))
Augment = Callable[
    [torch.Tensor, torch.Tensor, int, torch.Tensor], tuple[torch.Tensor, torch.Tensor]
]


@dataclass
class StepContext:
    """What one classification step needs besides the model and the batch."""

    prepare: Prepare
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    precision: Precision
    loss_fn: nn.Module
    clip_grad: float = 0.0  # max gradient norm; 0: no clipping
    augment: Augment | None = None  # None: off

    def optimization(self) -> Optimization:
        return Optimization(
            self.optimizer, self.scheduler, self.scaler, self.precision, self.clip_grad
        )


def image_input(preprocessing: Preprocessing, channels_last: bool = False) -> Prepare:
    """uint8 images (B, 3, h, w) -> normalised float input, channels-last if asked."""

    def prepare(images: torch.Tensor) -> torch.Tensor:
        x = preprocessing.to_input(images)  # (B, 3, H, W) float32
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x

    return prepare


def pixel_input(preprocessing: Preprocessing) -> Prepare:
    """uint8 images (B, 3, h, w) -> uint8 at the model's size: the input of an exported graph
    that normalises inside (``cnnkit export --bake-preprocessing``)."""

    def prepare(images: torch.Tensor) -> torch.Tensor:
        if tuple(images.shape[-2:]) == preprocessing.size:
            return images
        x = F.interpolate(
            images.float(),
            size=preprocessing.size,
            mode=preprocessing.interpolation,
            antialias=True,
            align_corners=False,
        )
        return x.round_().clamp_(0, 255).to(torch.uint8)

    return prepare


def feature_input(features: torch.Tensor) -> torch.Tensor:
    """Cached backbone features (stored compactly) -> float32 head input."""
    return features.float()


def steps_per_epoch(n: int, batch_size: int) -> int:
    return len(range(0, n - (1 if n % batch_size == 1 else 0), batch_size))


def shuffled_batches(
    data: ImageSet,
    batch_size: int,
    device: torch.device,
    weights: torch.Tensor | None = None,
) -> Callable[[torch.Generator], object]:
    """An epoch's shuffled batches (images, labels, indices) on the device; with per-image
    ``weights``, drawn in proportion to them. A final batch of one image breaks BatchNorm in
    training; it is dropped in that case only."""

    def make(generator: torch.Generator):
        return iterate_batches(
            data,
            batch_size,
            shuffle=True,
            generator=generator,
            device=device,
            drop_last=len(data) % batch_size == 1,
            with_indices=True,
            weights=weights,
        )

    return make


def classification_step(
    model: nn.Module,
    prepare: Prepare,
    precision: Precision,
    loss_fn: nn.Module,
    augment: Augment | None,
    progress: EpochProgress,
) -> Callable[[tuple[torch.Tensor, ...]], StepOutput]:
    """One step on a batch: augment (outside autocast), prepare, forward and loss in autocast;
    the tally is the count of correct predictions of the batch's true labels (multi-hot labels:
    the share of each image's labels right at 0.5, summed)."""

    def step(batch: tuple[torch.Tensor, ...]) -> StepOutput:
        images, labels, indices = batch
        targets = labels
        if augment is not None:
            images, targets = augment(images, labels, progress.step, indices)
        x = prepare(images)
        with precision.autocast():
            logits = model(x)
            loss = loss_fn(logits, targets)  # cross-entropy takes soft targets as they are
        if labels.dim() == 2:
            correct = label_tally(logits, labels)
        else:
            correct = (logits.detach().argmax(1) == labels).sum()
        return StepOutput({"loss": loss}, len(labels), {"accuracy": correct})

    return step


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
    """Train a classifier over `data` once, continuing from `progress.step` (see run_epoch)."""
    device = next(model.parameters()).device
    model.train()
    return run_epoch(
        classification_step(model, ctx.prepare, ctx.precision, ctx.loss_fn, ctx.augment, progress),
        shuffled_batches(data, batch_size, device),
        ctx.optimization(),
        generator,
        progress,
        device,
        should_stop,
        on_step,
        sync_every,
    )


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
    start, stop = evaluation_share(len(images))  # all of them, but under torchrun's evaluation
    for i in range(start, stop, batch_size):
        x = prepare(images[i : min(i + batch_size, stop)].to(device))
        with precision.autocast():
            outputs.append(model(x).float().cpu())
    return gather_rows(torch.cat(outputs) if outputs else torch.empty(0, 0))


def evaluate_epoch(
    model: nn.Module,
    data: ImageSet,
    prepare: Prepare,
    precision: Precision,
    batch_size: int = 256,
) -> tuple[float, float, torch.Tensor]:
    """(mean plain cross-entropy, top-1 accuracy, logits) of `model` on `data`. The loss is the
    plain cross-entropy, without the label smoothing training may use, so validation, the final
    test and `cnnkit evaluate` report the same number for the same logits."""
    logits = predict_logits(model, data.images, prepare, precision, batch_size)
    labels = data.labels
    if not len(labels):
        return 0.0, 0.0, logits
    loss = float(F.cross_entropy(logits, labels))
    accuracy = float((logits.argmax(1) == labels).float().mean())
    return loss, accuracy, logits
