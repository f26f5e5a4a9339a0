"""The adversarial losses on the discriminator's logits: DCGAN's non-saturating BCE (the
default) and the hinge loss (Lim and Ye 2017; Miyato et al. 2018)."""

from __future__ import annotations

import torch
from torch.nn import functional as F


def discriminator_loss(real: torch.Tensor, fake: torch.Tensor, kind: str | None) -> torch.Tensor:
    """bce: -log D(x) - log(1 - D(G(z))); hinge: max(0, 1 - D(x)) + max(0, 1 + D(G(z)))."""
    if kind == "hinge":
        return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()
    return F.softplus(-real).mean() + F.softplus(fake).mean()


def generator_loss(fake: torch.Tensor, kind: str | None) -> torch.Tensor:
    """bce (non-saturating): -log D(G(z)); hinge: -D(G(z))."""
    if kind == "hinge":
        return -fake.mean()
    return F.softplus(-fake).mean()
