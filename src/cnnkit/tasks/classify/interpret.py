"""Interpretation of a classifier's evaluation: what fastai's ClassificationInterpretation and
a calibration plot show. Balanced accuracy, the most confused class pairs, calibration (the
reliability diagram's bins and the expected calibration error), and the top losses: the
images the model was most sure of and wrong about.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from cnnkit.errors import CnnkitError

CALIBRATION_BINS = 15  # as torchmetrics' and Guo et al.'s expected calibration error


@dataclass
class CalibrationBin:
    low: float
    high: float
    count: int
    confidence: float  # mean top-1 probability in the bin
    accuracy: float  # share of the bin's top-1 predictions that are right


def calibration(probs: torch.Tensor, labels: torch.Tensor, bins: int = CALIBRATION_BINS):
    """(expected calibration error, bins): top-1 confidences in ``bins`` equal-width bins;
    ECE is the support-weighted mean |accuracy - confidence|."""
    confidence, predicted = probs.max(1)
    right = (predicted == labels).float()
    edges = torch.linspace(0, 1, bins + 1)
    out: list[CalibrationBin] = []
    ece = 0.0
    for i in range(bins):
        low, high = float(edges[i]), float(edges[i + 1])
        inside = (confidence > low) & (confidence <= high)
        count = int(inside.sum())
        if count:
            conf, acc = float(confidence[inside].mean()), float(right[inside].mean())
            ece += count / len(labels) * abs(acc - conf)
        else:
            conf = acc = 0.0
        out.append(CalibrationBin(low, high, count, conf, acc))
    return ece, out


def balanced_accuracy(confusion: torch.Tensor) -> float:
    """The mean recall over the classes that have images (what a long tail hides from top-1)."""
    actual = confusion.sum(1)
    present = actual > 0
    if not present.any():
        return 0.0
    recall = confusion.diag()[present].double() / actual[present].double()
    return float(recall.mean())


def most_confused(
    confusion: torch.Tensor, classes: list[str], k: int = 10
) -> list[tuple[str, str, int]]:
    """The k largest off-diagonal counts as (true, predicted, images), largest first."""
    off = confusion.clone()
    off.fill_diagonal_(0)
    flat = off.flatten()
    order = flat.argsort(descending=True, stable=True)[:k]
    n = len(classes)
    return [(classes[int(i) // n], classes[int(i) % n], int(flat[i])) for i in order if flat[i] > 0]


def top_losses(logits: torch.Tensor, labels: torch.Tensor, k: int = 16) -> list[int]:
    """Indices of the k images with the highest cross-entropy, highest first."""
    losses = F.cross_entropy(logits.float(), labels, reduction="none")
    return losses.argsort(descending=True, stable=True)[:k].tolist()


def plot_reliability(bins: list[CalibrationBin], ece: float, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    centres = [(b.low + b.high) / 2 for b in bins]
    width = bins[0].high - bins[0].low
    filled = [b.count > 0 for b in bins]
    ax.bar(
        [c for c, f in zip(centres, filled, strict=True) if f],
        [b.accuracy for b in bins if b.count],
        width=width * 0.95,
        color="#2f6fec",
        label="accuracy",
    )
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    ax.set_xlabel("confidence (top-1 probability)")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(f"reliability (ECE {ece:.3f})")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_top_losses(
    images: list, titles: list[str], path: Path, overlays: list | None = None
) -> Path:
    """A grid of the top-loss images (and beside each its CAM overlay when given)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_row = 4
    columns = per_row * (2 if overlays else 1)
    rows = max(1, -(-len(images) // per_row))
    fig, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 2.5 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, image in enumerate(images):
        r, c = divmod(i, per_row)
        c *= 2 if overlays else 1
        axes[r][c].imshow(image)
        axes[r][c].set_title(titles[i], fontsize=7)
        if overlays:
            axes[r][c + 1].imshow(overlays[i])
            axes[r][c + 1].set_title("Grad-CAM", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def top_loss_entries(
    images: Any,
    logits: torch.Tensor,
    labels: torch.Tensor,
    classes: list[str],
    threshold: float | None = None,
    k: int = 16,
) -> list[dict[str, Any]]:
    """The k misclassified images (of an ImageSet) with the highest loss: the model's surest
    mistakes first (fewer when it made fewer mistakes). A two-class model's mistakes are
    those its decision ``threshold`` makes, as predict decides."""
    from cnnkit.tasks.classify.metrics import decide

    probs = logits.float().softmax(1)
    decided = decide(probs, threshold)
    out = []
    for i in top_losses(logits, labels, len(labels)):
        if len(out) == k:
            break
        predicted = int(decided[i])
        if predicted == int(labels[i]):
            continue
        out.append(
            {
                "index": i,
                "path": str(images.paths[i]) if images.paths else None,
                "true": classes[int(labels[i])],
                "predicted": classes[predicted],
                "probability": float(probs[i, predicted]),
                "loss": float(-probs[i, int(labels[i])].clamp_min(1e-12).log()),
            }
        )
    return out


def draw_top_losses(predictor: Any, images: Any, losses: list[dict], path: Path) -> None:
    """top_losses.png: each image with its Grad-CAM for the predicted class (the images alone
    when the predictor gives no gradients, e.g. an exported file)."""
    if not losses:
        return
    arrays = [images.images[e["index"]].permute(1, 2, 0).numpy() for e in losses]
    titles = [
        f"{e['true']} -> {e['predicted']} {e['probability']:.0%}\nloss {e['loss']:.2f}"
        for e in losses
    ]
    overlays = None
    try:
        from cnnkit.explain.cam import explain, overlay

        found = explain(predictor, list(arrays))
        overlays = [overlay(a, r.heatmap) for a, r in zip(arrays, found, strict=True)]
    except (ImportError, CnnkitError):
        pass
    plot_top_losses(arrays, titles, path, overlays)
