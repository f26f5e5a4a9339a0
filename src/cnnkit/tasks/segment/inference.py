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
from cnnkit.tasks.detect.tta import check_tta as check_detection_tta
from cnnkit.tasks.segment.batch import classes_in_window, letterbox_batch


def check_tta(tta: str) -> str:
    """`tta`, or one line naming the choices (the same as a detector's)."""
    return check_detection_tta(tta, "segmentation")


@torch.no_grad()
def predict_classes(
    model: nn.Module,
    images: list[torch.Tensor],
    size: int,
    precision: Precision,
    batch_size: int = 8,
    tta: str = "none",
) -> Iterator[torch.Tensor]:
    """Per uint8 (3, h, w) image, int64 (h, w) class indices (each pixel's most probable class
    at the image's own size), in order, on the CPU."""
    check_tta(tta)
    device = next(model.parameters()).device
    model.eval()
    for start in range(0, len(images), batch_size):
        batch, windows = letterbox_batch(images[start : start + batch_size], size)
        batch = batch.to(device)
        with precision.autocast():
            scores = model(batch).float().softmax(1)  # probabilities are what is resized
        if tta == "flip":
            with precision.autocast():
                mirrored = model(batch.flip(-1)).float()
            scores = (scores + mirrored.softmax(1).flip(-1)) / 2
        for s, win in zip(scores.cpu(), windows, strict=True):
            yield classes_in_window(s, win)
