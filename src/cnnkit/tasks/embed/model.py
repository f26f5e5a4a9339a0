"""The embedding network: any cnnkit classifier built with `dim` outputs, a BatchNorm on them
(ArcFace's embedding layer), and L2 normalisation; the margin head trains beside it."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.engine.stages import is_staged
from cnnkit.tasks.embed.margin import MarginHead


class EmbeddingModel(nn.Module):
    """``forward(x)`` is the unit-length (B, dim) embedding; ``margin`` (training only) holds
    one vector per training identity."""

    def __init__(self, net: nn.Module, dim: int, margin: MarginHead) -> None:
        super().__init__()
        self.net = net
        self.bn = nn.BatchNorm1d(dim)
        self.margin = margin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.bn(self.net(x).float()), dim=1)


class StagedEmbeddingModel(EmbeddingModel):
    """An embedding model on a pretrained backbone in blocks: freezing and per-block learning
    rates go to the network, and the embedding layer and margin head train with its head."""

    def freeze(self, trainable_blocks: int | str = 0) -> None:
        self.net.freeze(trainable_blocks)

    def frozen_modules(self) -> list[nn.Module]:
        return self.net.frozen_modules()

    def param_groups(self, lr: float, backbone_lr_ratio: float = 0.1) -> list[dict]:
        groups = self.net.param_groups(lr, backbone_lr_ratio)
        ours = [*self.bn.parameters(), *self.margin.parameters()]
        return [{"params": ours, "lr": lr, "name": "embedding"}, *groups]


def embedding_model(net: nn.Module, dim: int, margin: MarginHead) -> EmbeddingModel:
    cls = StagedEmbeddingModel if is_staged(net) else EmbeddingModel
    return cls(net, dim, margin)
