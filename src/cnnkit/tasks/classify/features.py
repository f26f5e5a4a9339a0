"""The frozen-backbone feature cache: with the backbone frozen and nothing augmenting the input,
its features are the same every epoch, so they are computed once and the head trains on them."""

from __future__ import annotations

import torch
from torch import nn

from cnnkit.data import FeatureSet, ImageSet
from cnnkit.engine.device import Precision
from cnnkit.engine.stages import Stage
from cnnkit.models.transfer import TransferModel
from cnnkit.tasks.classify.loop import Prepare, predict_logits

FEATURE_CACHE_LIMIT_BYTES = 4 << 30  # cache frozen-backbone features only below this size


def can_cache_features(model: nn.Module, stage: Stage, n_images: int, augmented: bool) -> bool:
    """Features of a frozen backbone are the same every epoch when nothing augments the input."""
    if augmented or not (isinstance(model, TransferModel) and stage.head_only):
        return False
    per_image = 2 * int(torch.tensor(model.feature_shape).prod())  # stored as bf16
    return per_image * n_images <= FEATURE_CACHE_LIMIT_BYTES


@torch.no_grad()
def backbone_features(
    model: TransferModel, data: ImageSet, prepare: Prepare, precision: Precision
) -> ImageSet:
    """The frozen backbone's output for every image, as an ImageSet of bf16 features."""
    features = predict_logits(model.backbone, data.images, prepare, precision, batch_size=128)
    return FeatureSet(features.to(torch.bfloat16), data.labels, data.classes, data.paths)
