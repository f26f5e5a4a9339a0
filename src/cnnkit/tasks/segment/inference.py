"""Class maps for images of any size: letterbox a batch, run the segmenter, map logits back.

Shared by validation, the final test, `cnnkit evaluate` and `cnnkit predict`, so every figure
and every saved mask comes from the same pass. Flip test-time augmentation averages the
softmax of the image and of its mirror image (mirrored back).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from cnnkit.engine.device import Precision
from cnnkit.errors import CnnkitError
from cnnkit.tasks.segment.batch import letterbox_batch, logits_to_image

TTA_MODES = ("none", "flip")


def check_tta(tta: str) -> str:
    if tta not in TTA_MODES:
        raise CnnkitError(f"segmentation test-time augmentation is none or flip, not '{tta}'")
    return tta


@torch.no_grad()
def iter_probabilities(
    model: nn.Module,
    images: list[torch.Tensor],
    size: int,
    precision: Precision,
    batch_size: int = 8,
    tta: str = "none",
) -> Iterator[torch.Tensor]:
    """Per uint8 (3, h, w) image, float (C, h, w) class probabilities on the CPU, in order."""
    check_tta(tta)
    device = next(model.parameters()).device
    model.eval()
    for start in range(0, len(images), batch_size):
        batch, windows = letterbox_batch(images[start : start + batch_size], size)
        batch = batch.to(device)
        with precision.autocast():
            logits = model(batch)
        probs = logits.float().softmax(1)
        if tta == "flip":
            with precision.autocast():
                mirrored = model(batch.flip(-1))
            probs = (probs + mirrored.float().softmax(1).flip(-1)) / 2
        for p, win in zip(probs.cpu(), windows, strict=True):
            yield logits_to_image(p, win)


def predict_classes(
    model: nn.Module,
    images: list[torch.Tensor],
    size: int,
    precision: Precision,
    batch_size: int = 8,
    tta: str = "none",
) -> Iterator[torch.Tensor]:
    """Per image, int64 (h, w) class indices (the most probable class of each pixel)."""
    for probs in iter_probabilities(model, images, size, precision, batch_size, tta):
        yield probs.argmax(0)
