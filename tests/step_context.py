"""A plain fp32 CPU training step for loop tests (imported by test modules)."""

from __future__ import annotations

import torch
from torch import nn

from cnnkit.data.preprocess import Preprocessing
from cnnkit.engine.device import Precision
from cnnkit.tasks.classify.loop import StepContext, image_input


def sgd_step_context(
    model: nn.Module, lr: float, size: tuple[int, int] = (8, 8), **options
) -> StepContext:
    """SGD at a constant `lr`, cross-entropy, fp32 on the CPU; `options` go to StepContext."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    precision = Precision(torch.device("cpu"), "fp32")
    return StepContext(
        image_input(Preprocessing(size=size)),
        optimizer,
        torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0),
        precision.make_scaler(),
        precision,
        nn.CrossEntropyLoss(),
        **options,
    )
