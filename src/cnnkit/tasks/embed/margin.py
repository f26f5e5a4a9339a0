"""Additive-margin softmax losses for embedding training: ArcFace and CosFace.

Both score an embedding against one learned unit vector per training identity by cosine, take
a margin off the true identity's score and scale everything by ``s`` before cross-entropy, so
the network must put a photo closer to its own identity than to any other by the margin:
- ArcFace (Deng et al., CVPR 2019): cos(theta + m), an angular margin (m = 0.5 rad);
- CosFace (Wang et al., CVPR 2018): cos(theta) - m, a cosine margin (m = 0.35).
torch has no such layer and timm/torchvision none either; a few lines of our own.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.errors import did_you_mean

MARGIN_LOSSES = ("arcface", "cosface")
DEFAULT_MARGIN = {"arcface": 0.5, "cosface": 0.35}


class MarginHead(nn.Module):
    """One unit vector per identity; ``forward(embeddings, labels)`` gives the margin logits
    that cross-entropy trains on, ``cosine(embeddings)`` the plain ones."""

    def __init__(
        self,
        dim: int,
        identities: int,
        kind: str = "arcface",
        margin: float | None = None,
        scale: float = 30.0,
    ) -> None:
        super().__init__()
        if kind not in MARGIN_LOSSES:
            raise did_you_mean("margin loss", kind, list(MARGIN_LOSSES))
        self.kind = kind
        self.margin = float(DEFAULT_MARGIN[kind] if margin is None else margin)
        self.scale = float(scale)
        self.weight = nn.Parameter(torch.empty(identities, dim))
        nn.init.normal_(self.weight, std=0.01)

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B, identities) cosine similarities."""
        return F.linear(F.normalize(embeddings.float(), dim=1), F.normalize(self.weight, dim=1))

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cos = self.cosine(embeddings)  # float32 even under autocast: the margin is delicate
        target = cos.gather(1, labels.view(-1, 1))
        if self.kind == "cosface":
            shifted = target - self.margin
        else:
            sin = (1.0 - target.square()).clamp_min(1e-7).sqrt()
            shifted = target * math.cos(self.margin) - sin * math.sin(self.margin)
            # past pi - m, cos(theta + m) would rise again: use CosFace's form there (as
            # ArcFace's "easy margin" fix does), so the penalty keeps growing with the angle
            threshold = math.cos(math.pi - self.margin)
            fallback = target - math.sin(math.pi - self.margin) * self.margin
            shifted = torch.where(target > threshold, shifted, fallback)
        logits = cos.scatter(1, labels.view(-1, 1), shifted)
        return logits * self.scale

    def extra_repr(self) -> str:
        n, d = self.weight.shape
        return f"{self.kind}, dim={d}, identities={n}, margin={self.margin}, scale={self.scale}"
