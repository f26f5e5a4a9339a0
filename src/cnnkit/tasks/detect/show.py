"""show-batch for detection: augmented, letterboxed training images with their boxes drawn."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import torch

from cnnkit.config import TrainConfig
from cnnkit.data.augment import augment_generator
from cnnkit.data.show import save_batch_grid
from cnnkit.engine.device import Precision
from cnnkit.errors import CnnkitError
from cnnkit.tasks.detect.batch import resize_batch
from cnnkit.tasks.detect.draw import TRUE, draw_boxes


class ShownDetectionBatch(NamedTuple):
    path: Path
    count: int
    augmentation: str


def show_detection_batch(
    cfg: TrainConfig, n: int = 16, out: str | os.PathLike = "batch.png"
) -> ShownDetectionBatch:
    """The first training step's images as the detector sees them (augmented, resized), each
    with its boxes and class names, in a grid written to `out`."""
    from cnnkit.tasks.detect.task import DetectTask

    if n < 1:
        raise CnnkitError(f"--n must be at least 1, got {n}")
    task = DetectTask(cfg, torch.device("cpu"), Precision(torch.device("cpu"), "fp32"), False)
    task.load_data(progress=False)
    train = task.data.train
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg.seed))
    chosen = order[:n].tolist()
    generator = augment_generator(cfg.seed, 0, 0)
    images, targets = [], []
    for i in chosen:
        image, target = task.augment(train.images[i], train.targets[i], generator)
        images.append(image)
        targets.append(target)
    batch = resize_batch(images, targets, task.size, "letterbox")
    drawn, captions = [], []
    for image, target in zip(batch.images, batch.targets, strict=True):
        names = [task.data.classes[int(c)] for c in target.labels]
        drawn.append(draw_boxes(image, target.boxes, names, TRUE))
        captions.append(f"{len(target)} box{'es' if len(target) != 1 else ''}")
    path = save_batch_grid(torch.stack(drawn), captions, out, ncols=4, upscale_to=task.size)
    return ShownDetectionBatch(path, len(drawn), task.augmentation.describe())
