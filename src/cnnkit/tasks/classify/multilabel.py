"""Multi-label classification (ChestMNIST's 14 findings): an image may carry any number of the
labels. The model is an ordinary classifier whose C logits are read one label at a time:
binary cross-entropy on multi-hot targets in training, a sigmoid at prediction, and a threshold
per label chosen on validation (Youden's J, as the two-class threshold in roc.py).

AUC and average precision are torchmetrics' MultilabelAUROC / MultilabelAveragePrecision per
label; a label whose images are all positive or all negative has no ROC and is left out of the
macro means (None in its row).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.errors import CnnkitError
from cnnkit.tasks.class_balance import class_weights
from cnnkit.tasks.classify.roc import choose_threshold, operating_point

TRAIN_METRICS = ("loss", "accuracy", "auc")  # history's val_ columns for multi-label runs


class MultiLabelLoss(nn.Module):
    """Binary cross-entropy with logits on multi-hot (or mixed) targets; label smoothing pulls
    each target towards 1/2 by ``smoothing`` / 2; ``pos_weight`` (C,) weighs the positives."""

    def __init__(self, pos_weight: torch.Tensor | None = None, smoothing: float = 0.0) -> None:
        super().__init__()
        self.smoothing = float(smoothing)
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        targets = targets.to(logits.dtype)
        if self.smoothing:
            targets = targets * (1 - self.smoothing) + self.smoothing / 2
        return F.binary_cross_entropy_with_logits(logits, targets, pos_weight=self.pos_weight)


def multilabel_loss(
    class_weights_value: str | None, sampler: str | None, targets: torch.Tensor, smoothing: float
) -> MultiLabelLoss:
    """The training loss of a multi-label run. ``--class-weights auto`` is BCE's pos_weight of
    each label's negatives over its positives (1 for a label without positives); a list gives
    one pos_weight per label. ``--sampler balanced`` draws by each image's one class, which
    multi-label images do not have: refused."""
    if sampler == "balanced":
        raise CnnkitError(
            "--sampler balanced draws images by their one class; multi-label images have "
            "several: use --class-weights auto (a positive weight per label) instead"
        )
    positives = targets.double().sum(0)
    pos_weight = None
    if str(class_weights_value).strip().lower() == "auto":
        negatives = len(targets) - positives
        pos_weight = torch.where(positives > 0, negatives / positives.clamp_min(1), 1.0).float()
    else:
        pos_weight = class_weights(class_weights_value, positives)
    return MultiLabelLoss(pos_weight, smoothing)


def label_tally(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Right labels at a 0.5 probability (logit 0) per image (each image adds up to 1): the
    training step's tally, so its mean is the per-label accuracy."""
    return ((logits.detach() > 0) == (targets > 0.5)).sum() / targets.shape[1]


def _present(targets: torch.Tensor) -> torch.Tensor:
    """bool (C,): labels with both positive and negative images."""
    positives = targets.sum(0)
    return (positives > 0) & (positives < len(targets))


def per_label_ranking(
    probs: torch.Tensor, targets: torch.Tensor
) -> tuple[list[float | None], list[float | None]]:
    """(AUC per label, average precision per label); None where a label has no ROC."""
    from torchmetrics.functional.classification import (
        multilabel_auroc,
        multilabel_average_precision,
    )

    count = targets.shape[1]
    if not len(targets):
        return [None] * count, [None] * count
    truth = (targets > 0.5).int()
    with warnings.catch_warnings():  # a one-sided label's warning: it is reported as None
        warnings.simplefilter("ignore", UserWarning)
        auc = multilabel_auroc(probs.float(), truth, count, average="none", thresholds=None)
        ap = multilabel_average_precision(probs.float(), truth, count, average="none")
    present = _present(truth).tolist()
    return (
        [float(a) if p else None for a, p in zip(auc.tolist(), present, strict=True)],
        [float(a) if p else None for a, p in zip(ap.tolist(), present, strict=True)],
    )


def macro(values: list[float | None]) -> float | None:
    """The mean of the values that exist (None when none does)."""
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def choose_label_thresholds(probs: torch.Tensor, targets: torch.Tensor) -> list[float]:
    """Per label, the threshold on its probability that maximises Youden's J on these
    (validation) images; 0.5 for a label they hold only one side of."""
    truth = (targets > 0.5).long()
    return [choose_threshold(probs[:, k], truth[:, k]) for k in range(targets.shape[1])]


def validation_values(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, float | None]:
    """history's figures of a validation pass: plain BCE, per-label accuracy at 0.5 and the
    macro AUC (None when no label has both sides)."""
    if not len(targets):
        return {"loss": 0.0, "accuracy": 0.0, "auc": None}
    loss = float(F.binary_cross_entropy_with_logits(logits.float(), targets.float()))
    accuracy = float(((logits > 0) == (targets > 0.5)).float().mean())
    return {"loss": loss, "accuracy": accuracy, "auc": macro(per_label_ranking(logits, targets)[0])}


def score_name(val_targets: torch.Tensor | None) -> str:
    """What picks best.pt: the macro AUC, or the per-label accuracy when the validation images
    leave every label one-sided (no ROC to rank by)."""
    if val_targets is not None and len(val_targets) and bool(_present(val_targets).any()):
        return "auc"
    return "accuracy"


@dataclass
class LabelFigures:
    """One label's evaluation."""

    name: str
    positives: int
    auc: float | None
    average_precision: float | None
    threshold: float
    sensitivity: float | None  # None for a label without a positive image
    specificity: float | None  # None for a label without a negative image


@dataclass
class MultilabelReport:
    """What `cnnkit evaluate` prints and writes for a multi-label model."""

    classes: list[str]
    loss: float
    label_accuracy: float  # share of (image, label) decisions right at the thresholds
    exact_match: float  # share of images whose every label is decided right
    labels: list[LabelFigures]
    images: int
    threshold_chosen: bool  # the thresholds came from validation, not the 0.5 default
    tta: str = "none"
    out_dir: Path | None = None
    _scores: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False)

    multilabel = True

    @property
    def auc(self) -> float | None:
        return macro([f.auc for f in self.labels])

    @property
    def average_precision(self) -> float | None:
        return macro([f.average_precision for f in self.labels])

    def _macro_over_present(self, name: str) -> float | None:
        return macro([getattr(f, name) for f in self.labels if f.auc is not None])

    def to_dict(self) -> dict[str, Any]:
        return {
            "task_type": "multi-label",
            "loss": self.loss,
            "images": self.images,
            "auc": self.auc,
            "average_precision": self.average_precision,
            "sensitivity": self._macro_over_present("sensitivity"),
            "specificity": self._macro_over_present("specificity"),
            "label_accuracy": self.label_accuracy,
            "exact_match": self.exact_match,
            "thresholds_from": "validation" if self.threshold_chosen else "default 0.5",
            "tta": self.tta,
            "per_label": {
                f.name: {
                    "positives": f.positives,
                    "auc": f.auc,
                    "average_precision": f.average_precision,
                    "threshold": f.threshold,
                    "sensitivity": f.sensitivity,
                    "specificity": f.specificity,
                }
                for f in self.labels
            },
        }

    def show(self, console: Any = None) -> None:
        from cnnkit.tasks.classify.multilabel_report import print_multilabel

        print_multilabel(self, console)


def multilabel_report(
    logits: torch.Tensor,
    targets: torch.Tensor,
    classes: list[str],
    thresholds: list[float] | None = None,
) -> MultilabelReport:
    """The report of these logits against multi-hot targets; ``thresholds`` (one per label,
    chosen on validation; default 0.5 each) decide each label."""
    count = len(classes)
    chosen = thresholds is not None
    limits = torch.tensor(thresholds if chosen else [0.5] * count, dtype=torch.float32)
    probs = logits.float().sigmoid()
    truth = (targets > 0.5).long()
    called = probs >= limits
    aucs, aps = per_label_ranking(probs, targets)
    figures = []
    for k, name in enumerate(classes):
        point = operating_point(probs[:, k], truth[:, k], float(limits[k]))
        figures.append(
            LabelFigures(
                name,
                int(truth[:, k].sum()),
                aucs[k],
                aps[k],
                float(limits[k]),
                point.sensitivity,
                point.specificity,
            )
        )
    n = len(targets)
    loss = float(F.binary_cross_entropy_with_logits(logits.float(), targets.float())) if n else 0.0
    right = called == truth.bool()
    return MultilabelReport(
        classes=list(classes),
        loss=loss,
        label_accuracy=float(right.float().mean()) if n else 0.0,
        exact_match=float(right.all(1).float().mean()) if n else 0.0,
        labels=figures,
        images=n,
        threshold_chosen=chosen,
        _scores=(probs, truth),
    )
