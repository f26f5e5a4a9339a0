"""Class balance for any task: cross-entropy class weights and balanced sampling.

``class_weights("auto", counts)`` is median-frequency balancing (Eigen and Fergus, 2015):
each class weighs the median class frequency over its own, so a class ten times rarer than the
median counts ten times more; absent classes weigh 0. ``balanced_sample_weights`` gives each
training image the weight 1 / (its class's count), so a sampler drawing by these weights
draws every class equally often.
"""

from __future__ import annotations

import math

import torch

from cnnkit.errors import CnnkitError


def class_weights(value: str | None, counts: torch.Tensor) -> torch.Tensor | None:
    """The --class-weights setting: None / "none" (all 1), "auto" (median-frequency balancing
    over ``counts``, the training pixels per class), or "w1,w2,..." (one per class)."""
    if value is None or str(value).strip().lower() == "none":
        return None
    text = str(value).strip().lower()
    n = len(counts)
    if text == "auto":
        freq = counts.double() / max(int(counts.sum()), 1)
        present = freq > 0
        if not present.any():
            return None
        median = freq[present].median()
        out = torch.where(present, median / freq.clamp_min(1e-12), torch.zeros_like(freq))
        return out.float()
    try:
        weights = [float(w) for w in text.split(",")]
    except ValueError:
        raise CnnkitError(
            f"--class-weights is auto, none or one number per class, got '{value}'"
        ) from None
    finite = all(math.isfinite(w) for w in weights)
    if len(weights) != n or not finite or any(w < 0 for w in weights) or not any(weights):
        raise CnnkitError(
            f"--class-weights needs {n} non-negative numbers (one per class), got '{value}'"
        )
    return torch.tensor(weights, dtype=torch.float32)


def balanced_sample_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per image 1 / (number of training images of its class): float64 (N,)."""
    counts = torch.bincount(labels.long(), minlength=num_classes).double()
    return 1.0 / counts[labels.long()]
