"""A segmenter's training losses: cross-entropy over pixels, optional Dice, class weights.

Cross-entropy is torch's, with ``ignore_index`` 255 and optional per-class weights. The soft
Dice loss is written here (a few lines; the libraries that have one, segmentation_models_pytorch
or MONAI, would be a large dependency for it): 1 - mean over classes of 2 sum(p t) / (sum(p) +
sum(t)) with softmax probabilities p and one-hot truth t over the pixels that are not ignored,
smoothed by 1 so a class absent from the batch and not predicted scores as perfect.
Class weights come from cnnkit.tasks.class_balance (median-frequency balancing over the
training pixels, shared with classification).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from cnnkit.tasks.class_balance import class_weights
from cnnkit.tasks.segment.dataset import IGNORE_INDEX

__all__ = ["class_weights", "dice_loss", "segmentation_losses"]


def dice_loss(logits: torch.Tensor, masks: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Soft multi-class Dice loss of (B, C, H, W) logits against (B, H, W) class masks."""
    num_classes = logits.shape[1]
    valid = (masks != IGNORE_INDEX).unsqueeze(1)
    probs = logits.float().softmax(1) * valid
    truth = F.one_hot(masks.long().clamp(0, num_classes - 1), num_classes).permute(0, 3, 1, 2)
    truth = truth.to(probs.dtype) * valid
    dims = (0, 2, 3)
    overlap = (probs * truth).sum(dims)
    total = probs.sum(dims) + truth.sum(dims)
    return 1 - ((2 * overlap + smooth) / (total + smooth)).mean()


def segmentation_losses(
    logits: torch.Tensor,
    masks: torch.Tensor,
    weights: torch.Tensor | None = None,
    dice: float = 0.0,
) -> dict[str, torch.Tensor]:
    """{"loss": total, "ce": cross-entropy[, "dice": Dice loss]}; the total is ce + dice * Dice."""
    masks = masks.long()
    ce = F.cross_entropy(logits.float(), masks, weight=weights, ignore_index=IGNORE_INDEX)
    if not torch.isfinite(ce):  # every pixel ignored: nothing to learn from this batch
        ce = logits.sum() * 0.0
    losses = {"ce": ce}
    total = ce
    if dice > 0:
        losses["dice"] = dice_loss(logits, masks)
        total = total + dice * losses["dice"]
    return {"loss": total, **losses}
