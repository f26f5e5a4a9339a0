"""Classification metrics from logits: top-k accuracy, confusion matrix, per-class P/R/F1."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from cnnkit.tasks.classify.interpret import balanced_accuracy, calibration, most_confused
from cnnkit.tasks.classify.roc import (
    BinaryOperatingPoint,
    one_vs_rest,
    operating_point,
    plot_roc,
)


@dataclass
class ClassificationReport:
    """Everything `cnnkit evaluate` prints and writes."""

    classes: list[str]
    loss: float
    top1: float
    top5: float
    confusion: torch.Tensor  # (C, C) int64: rows are true classes, columns predictions
    precision: list[float]
    recall: list[float]
    f1: list[float]
    support: list[int]
    out_dir: Path | None = None  # where write_report put the files, if anywhere
    tta: str = "none"  # test-time augmentation the figures above used
    top1_without_tta: float | None = None  # the same model without TTA, to show the gain
    # two classes decided by a threshold: top-1 by argmax too (MedMNIST's ACC is argmax's)
    argmax_top1: float | None = None
    balanced_accuracy: float = 0.0  # mean per-class recall
    ece: float = 0.0  # expected calibration error of the top-1 probability
    calibration_bins: list = field(default_factory=list)  # interpret.CalibrationBin
    confused: list = field(default_factory=list)  # (true, predicted, images), most first
    top_losses: list = field(default_factory=list)  # dicts, highest loss first (evaluate's)
    auc: float | None = None  # ROC AUC (two classes: the positive's; else macro one-vs-rest)
    average_precision: float | None = None
    # two classes: the operating point of the threshold chosen on validation (or 0.5)
    operating: BinaryOperatingPoint | None = None
    threshold_chosen: bool = False  # the threshold came from validation, not the 0.5 default
    _scores: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False)

    @property
    def macro_f1(self) -> float:
        """Mean F1 over the classes in the truth or the predictions (as scikit-learn's
        f1_score(average="macro") counts them): a class the data does not hold and the model
        never answers (a held-out set of some classes) has no F1 to average."""
        answered = self.confusion.sum(0).tolist() if self.confusion.numel() else []
        present = [
            f for i, f in enumerate(self.f1) if self.support[i] or (answered and answered[i])
        ]
        return sum(present) / max(len(present), 1)

    def to_dict(self) -> dict:
        return {
            "loss": self.loss,
            "top1_accuracy": self.top1,
            "top5_accuracy": self.top5,
            "macro_f1": self.macro_f1,
            "balanced_accuracy": self.balanced_accuracy,
            "expected_calibration_error": self.ece,
            "images": int(sum(self.support)),
            "tta": self.tta,
            "top1_accuracy_without_tta": self.top1_without_tta,
            "top1_accuracy_argmax": self.argmax_top1,
            "per_class": {
                name: {
                    "precision": self.precision[i],
                    "recall": self.recall[i],
                    "f1": self.f1[i],
                    "support": self.support[i],
                }
                for i, name in enumerate(self.classes)
            },
            "confusion_matrix": self.confusion.tolist(),
            "most_confused": [
                {"true": t, "predicted": p, "images": n} for t, p, n in self.confused
            ],
            "calibration": [asdict(b) for b in self.calibration_bins],
            "top_losses": self.top_losses,
            "auc": self.auc,
            "average_precision": self.average_precision,
            "operating_point": None
            if self.operating is None
            else {
                **asdict(self.operating),
                "positive_class": self.classes[1],
                "threshold_from": "validation" if self.threshold_chosen else "default 0.5",
            },
        }

    def plot_roc(self, path: Path) -> Path | None:
        if self._scores is None or self.auc is None:
            return None
        return plot_roc(*self._scores, self.classes, path, self.operating)


def top_k(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, indices) of each row's k highest scores, highest first; equal scores rank by
    class index, so the first is always ``argmax``'s. (``torch.topk`` breaks ties its own way:
    with bf16 logits, where ties are common, its top-1 disagreed with argmax's, and the
    accuracy a run reported with cnnkit evaluate's on the same logits.)"""
    k = min(k, scores.shape[1])
    indices = scores.argsort(dim=1, descending=True, stable=True)[:, :k]
    return scores.gather(1, indices), indices


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Share of rows whose label is among the k highest logits (k capped at the class count)."""
    if len(labels) == 0:
        return 0.0
    top = top_k(logits, k)[1]
    return float((top == labels[:, None]).any(dim=1).float().mean())


def confusion_matrix(
    predicted: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> torch.Tensor:
    index = labels.long() * num_classes + predicted.long()
    return torch.bincount(index, minlength=num_classes**2).view(num_classes, num_classes)


def decide(probs: torch.Tensor, threshold: float | None = None) -> torch.Tensor:
    """Each row's class: the most probable, or for two classes with a decision threshold,
    class 1 where its probability reaches the threshold (as predict and serve decide)."""
    if threshold is not None and probs.shape[1] == 2:
        return (probs[:, 1] >= threshold).long()
    return probs.argmax(1)


def classification_report(
    logits: torch.Tensor,
    labels: torch.Tensor,
    classes: list[str],
    threshold: float | None = None,
) -> ClassificationReport:
    """The report of these logits; for two classes, ``threshold`` (the one chosen on
    validation; default 0.5) on class 1's probability gives sensitivity and specificity, and
    decides each image's class for top-1 accuracy, the confusion matrix and the per-class
    figures, as predict and serve decide it."""
    n = len(classes)
    probs = logits.float().softmax(1)
    decided = decide(probs, threshold)  # the class predict and serve answer
    cm = confusion_matrix(decided, labels, n)
    true_pos = cm.diag().double()
    predicted = cm.sum(0).double()
    actual = cm.sum(1).double()
    precision = torch.where(predicted > 0, true_pos / predicted.clamp(min=1), 0.0)
    recall = torch.where(actual > 0, true_pos / actual.clamp(min=1), 0.0)
    denom = precision + recall
    f1 = torch.where(denom > 0, 2 * precision * recall / denom.clamp(min=1e-12), 0.0)
    loss = float(F.cross_entropy(logits, labels)) if len(labels) else 0.0
    ece, bins = calibration(probs, labels) if len(labels) else (0.0, [])
    ranking = one_vs_rest(probs, labels) if len(labels) else {}
    operating = None
    if n == 2 and len(labels):
        operating = operating_point(probs[:, 1], labels, 0.5 if threshold is None else threshold)
    return ClassificationReport(
        classes=list(classes),
        loss=loss,
        top1=float((decided == labels).float().mean()) if len(labels) else 0.0,
        argmax_top1=(
            topk_accuracy(logits, labels, 1) if n == 2 and threshold is not None else None
        ),
        top5=topk_accuracy(logits, labels, 5),
        confusion=cm,
        precision=precision.tolist(),
        recall=recall.tolist(),
        f1=f1.tolist(),
        support=actual.long().tolist(),
        balanced_accuracy=balanced_accuracy(cm),
        ece=ece,
        calibration_bins=bins,
        confused=most_confused(cm, list(classes)),
        auc=ranking.get("auc"),
        average_precision=ranking.get("average_precision"),
        operating=operating,
        threshold_chosen=threshold is not None,
        _scores=(probs, labels),
    )
