"""Ranking metrics for medical-style evaluation: ROC AUC, average precision, and, for two
classes, the decision threshold chosen on validation with the sensitivity and specificity it
gives.

AUC and AP come from torchmetrics (binary_auroc / binary_average_precision, the trapezoidal
ROC area and the step-wise AP that scikit-learn computes too). Several classes are scored one
against the rest and macro-averaged over the classes present with both positives and negatives
(a class absent from the split has no ROC). For two classes the second class (index 1) is the
positive one: pneumonia in PneumoniaMNIST, as MedMNIST scores it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


@dataclass
class BinaryOperatingPoint:
    """What a threshold on the positive class's probability gives."""

    threshold: float
    sensitivity: float | None  # recall of the positive class; None without a positive image
    specificity: float | None  # recall of the negative class; None without a negative image
    accuracy: float


def rate_text(value: float | None, missing: str) -> str:
    """A sensitivity or specificity as people read it: a percentage, or n/a and why where
    there is no image to count it over (undefined, not 0%)."""
    return f"{value:.2%}" if value is not None else f"n/a (no {missing} image)"


def _present(labels: torch.Tensor, c: int) -> bool:
    positives = int((labels == c).sum())
    return 0 < positives < len(labels)


def one_vs_rest(probs: torch.Tensor, labels: torch.Tensor) -> dict[str, float | None]:
    """{"auc": ..., "average_precision": ...}: the positive class's for two classes, else
    the macro mean over classes present; None when no class has both positives and negatives."""
    from torchmetrics.functional.classification import binary_auroc, binary_average_precision

    probs, labels = probs.float(), labels.long()
    classes = [1] if probs.shape[1] == 2 else range(probs.shape[1])
    aucs, aps = [], []
    for c in classes:
        if not _present(labels, c):
            continue
        target = (labels == c).long()
        aucs.append(float(binary_auroc(probs[:, c], target)))
        aps.append(float(binary_average_precision(probs[:, c], target)))
    if not aucs:
        return {"auc": None, "average_precision": None}
    return {"auc": sum(aucs) / len(aucs), "average_precision": sum(aps) / len(aps)}


def operating_point(
    positive: torch.Tensor, labels: torch.Tensor, threshold: float
) -> BinaryOperatingPoint:
    """Sensitivity, specificity and accuracy when ``positive >= threshold`` means class 1; a
    rate over no images (no positive, or no negative, image) is None."""
    called = positive.float() >= threshold
    truth = labels.long() == 1
    pos, neg = int(truth.sum()), int((~truth).sum())
    sensitivity = float((called & truth).sum()) / pos if pos else None
    specificity = float((~called & ~truth).sum()) / neg if neg else None
    accuracy = float((called == truth).float().mean()) if len(labels) else 0.0
    return BinaryOperatingPoint(float(threshold), sensitivity, specificity, accuracy)


def choose_threshold(positive: torch.Tensor, labels: torch.Tensor) -> float:
    """The threshold on the positive class's probability that maximises Youden's J
    (sensitivity + specificity - 1) on these (validation) images; 0.5 when they hold one
    class only. Ties go to the threshold nearest 0.5."""
    positive, truth = positive.float(), labels.long() == 1
    if not _present(labels.long(), 1):
        return 0.5
    candidates = torch.unique(positive)
    # each candidate as a threshold: called positive when >= it (sorted, cumulative counts)
    order = positive.argsort(descending=True)
    sorted_p, sorted_truth = positive[order], truth[order].float()
    tp = torch.cumsum(sorted_truth, 0)
    fp = torch.cumsum(1 - sorted_truth, 0)
    # the last index of each distinct value: all images scoring >= it are called positive
    last = torch.searchsorted(-sorted_p, -candidates, right=True) - 1
    j = tp[last] / truth.sum() - fp[last] / (~truth).sum()
    best = j.max()
    tied = candidates[j >= best - 1e-12]
    return float(tied[(tied - 0.5).abs().argmin()])


def plot_roc(
    probs: torch.Tensor,
    labels: torch.Tensor,
    classes: list[str],
    path: Path,
    point: BinaryOperatingPoint | None = None,
) -> Path | None:
    """roc.png: the ROC curve (the positive class's for two classes, one per class present
    otherwise, at most 10), with the chosen threshold's point marked."""
    import matplotlib
    from torchmetrics.functional.classification import binary_auroc, binary_roc

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [1] if probs.shape[1] == 2 else list(range(probs.shape[1]))
    shown = [c for c in shown if _present(labels.long(), c)][:10]
    if not shown:
        return None
    fig, ax = plt.subplots(figsize=(5, 5))
    for c in shown:
        target = (labels.long() == c).long()
        fpr, tpr, _ = binary_roc(probs[:, c].float(), target)
        auc = float(binary_auroc(probs[:, c].float(), target))
        ax.plot(fpr.numpy(), tpr.numpy(), label=f"{classes[c]} (AUC {auc:.3f})")
    if point is not None and point.sensitivity is not None and point.specificity is not None:
        ax.plot(
            1 - point.specificity,
            point.sensitivity,
            "ko",
            label=f"threshold {point.threshold:.3f}: sens {point.sensitivity:.3f}, "
            f"spec {point.specificity:.3f}",
        )
    title = "ROC" if len(shown) == 1 else "ROC, each class against the rest"
    return save_roc(fig, ax, path, title)


def save_roc(fig: Any, ax: Any, path: Path, title: str, legend: bool = True) -> Path:
    """Finish a ROC figure the same way everywhere (chance diagonal, axis names, legend,
    grid) and write it to ``path``."""
    import matplotlib.pyplot as plt

    ax.plot([0, 1], [0, 1], "--", color="gray", linewidth=1)
    ax.set_xlabel("false positive rate (1 - specificity)")
    ax.set_ylabel("true positive rate (sensitivity)")
    ax.set_title(title)
    if legend:
        ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
