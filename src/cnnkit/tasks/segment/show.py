"""show-batch for segmentation: augmented, letterboxed training images with their masks laid
over them in the class colours (ignored pixels, such as what a zoom-out uncovers, in white)."""

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
from cnnkit.tasks.segment.dataset import IGNORE_INDEX
from cnnkit.tasks.segment.draw import colour_mask


class ShownSegmentationBatch(NamedTuple):
    path: Path
    count: int
    augmentation: str


def show_segmentation_batch(
    cfg: TrainConfig, n: int = 16, out: str | os.PathLike = "batch.png"
) -> ShownSegmentationBatch:
    """The first training step's images as the segmenter sees them (letterboxed, augmented),
    each with its mask blended over it and the classes it holds, in a grid written to `out`."""
    from cnnkit.tasks.segment.task import SegmentTask

    if n < 1:
        raise CnnkitError(f"--n must be at least 1, got {n}")
    cpu = torch.device("cpu")
    task = SegmentTask(cfg, cpu, Precision(cpu, "fp32"), False)
    task.load_data(progress=False)
    train = task.data.train
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg.seed))
    generator = augment_generator(cfg.seed, 0, 0)
    classes = task.data.classes
    drawn, captions = [], []
    for i in order[:n].tolist():
        image, mask = task.training_sample(i, generator)
        colours = colour_mask(mask, len(classes))
        blend = (image.float() * 0.5 + colours.float() * 0.5).round().to(torch.uint8)
        background = (mask == 0) & (len(classes) > 1)
        blend[:, background] = image[:, background]  # the background class shows the photo
        drawn.append(blend)
        present = [int(c) for c in mask.unique() if int(c) not in (0, IGNORE_INDEX)]
        captions.append(", ".join(classes[c] for c in present[:3]) or classes[0])
    path = save_batch_grid(torch.stack(drawn), captions, out, ncols=4, upscale_to=task.size)
    return ShownSegmentationBatch(path, len(drawn), task.augmentation_text())
