"""Backbone features of a dataset (for linear probes and similarity search), saved as npz."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cnnkit.data import ImageSet
from cnnkit.models.transfer import TransferModel
from cnnkit.tasks.classify.loop import image_input, predict_logits
from cnnkit.tasks.classify.predictor import Classifier


def feature_extractor(model: nn.Module) -> nn.Module:
    """The part of a model that yields image features: a TransferModel's backbone (pooled), or
    everything before the final dense layer of any other model."""
    if isinstance(model, TransferModel):
        return _Pooled(model.backbone)
    return _BeforeLastLinear(model)


class _Pooled(nn.Module):
    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone(x)
        return features.mean(dim=(2, 3)) if features.dim() == 4 else features.flatten(1)


class _BeforeLastLinear(nn.Module):
    """Runs the model and returns the input of its last nn.Linear (a forward hook catches it)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise ValueError("model has no dense layer to take features before")
        self.last = linears[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        caught: list[torch.Tensor] = []
        handle = self.last.register_forward_hook(lambda m, inp, out: caught.append(inp[0]))
        try:
            self.model(x)
        finally:
            handle.remove()
        return caught[0].flatten(1)


def embed_images(clf: Classifier, images: ImageSet, batch_size: int = 128) -> np.ndarray:
    """(N, F) float32 features of uint8 images through the classifier's own preprocessing."""
    extractor = feature_extractor(clf.model)
    prepare = image_input(clf.preprocessing, clf.channels_last)
    return predict_logits(extractor, images.images, prepare, clf.precision, batch_size).numpy()


def save_embeddings(path: str | os.PathLike, features: np.ndarray, images: ImageSet) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        path,
        features=features,
        labels=images.labels.numpy(),
        classes=np.array(images.classes),
        paths=np.array(images.paths or []),
    )
    return path
