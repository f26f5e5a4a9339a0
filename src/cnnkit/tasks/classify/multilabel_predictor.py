"""A multi-label classifier's predictions and evaluation: each label's sigmoid probability,
decided by that label's threshold (chosen on validation, stored in best.pt)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cnnkit.data import ImageSet
from cnnkit.errors import CnnkitError
from cnnkit.tasks.classify.multilabel import MultilabelReport, multilabel_report
from cnnkit.tasks.classify.predictor import Classifier
from cnnkit.tasks.evaluation_data import evaluation_folder


@dataclass
class MultilabelPrediction:
    """Every label's probability for one image, and the labels over their thresholds."""

    source: str
    probabilities: list[tuple[str, float]]  # in the model's label order
    thresholds: list[float]
    tta: str = "none"
    top: int = 5  # how many labels `top_k` lists (the CLI's table and CSV)

    @property
    def labels(self) -> list[str]:
        """The labels whose probability reaches their threshold, most probable first."""
        over = [
            (p, name)
            for (name, p), t in zip(self.probabilities, self.thresholds, strict=True)
            if p >= t
        ]
        return [name for _, name in sorted(over, key=lambda x: -x[0])]

    @property
    def top_k(self) -> list[tuple[str, float]]:
        return sorted(self.probabilities, key=lambda x: -x[1])[: self.top]

    @property
    def label(self) -> str:
        """The decided labels joined by "; " ("none" when no label reaches its threshold)."""
        return "; ".join(self.labels) or "none"

    @property
    def probability(self) -> float:
        """The highest probability among the decided labels (else among all labels)."""
        decided = dict(self.probabilities)
        names = self.labels or [self.top_k[0][0]]
        return max(decided[name] for name in names)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "labels": self.labels,
            "probabilities": dict(self.probabilities),
            "thresholds": {
                name: t for (name, _), t in zip(self.probabilities, self.thresholds, strict=True)
            },
            "tta": self.tta,
        }


class MultilabelClassifier(Classifier):
    """A Classifier whose outputs are independent labels: sigmoid, not softmax."""

    multilabel = True

    def __init__(self, *args: Any, label_thresholds: list[float], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if len(label_thresholds) != len(self.classes):
            raise CnnkitError(
                f"{len(label_thresholds)} label thresholds for {len(self.classes)} labels"
            )
        self.label_thresholds = [float(t) for t in label_thresholds]

    def predict_images(
        self, images: torch.Tensor, batch_size: int = 256, tta: str = "none"
    ) -> torch.Tensor:
        """Each label's probability (N, labels) for uint8 images (N, 3, H, W)."""
        return self.logits(images, batch_size, tta)[0].sigmoid()

    def _predict_arrays(
        self, arrays: list[np.ndarray], names: list[str], top_k: int, tta: str = "none"
    ) -> list[MultilabelPrediction]:  # type: ignore[override]
        if not arrays:
            return []
        images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
        probs = self.predict_images(images, tta=tta)
        return [
            MultilabelPrediction(
                name,
                list(zip(self.classes, row, strict=True)),
                self.label_thresholds,
                tta,
                min(top_k, len(self.classes)),
            )
            for name, row in zip(names, probs.tolist(), strict=True)
        ]

    def evaluate(
        self,
        data: str | os.PathLike | ImageSet,
        split: str = "test",
        data_root: str | None = None,
        out_dir: str | os.PathLike | None = None,
        batch_size: int = 256,
        progress: bool = True,
        tta: str = "none",
    ) -> MultilabelReport:  # type: ignore[override]
        """Per-label AUC, average precision, sensitivity and specificity at the stored
        thresholds, their macro means, label accuracy and the exact-match ratio; written to
        `out_dir` (default: beside the checkpoint) as metrics.json, per_label.csv and roc.png."""
        from cnnkit.tasks.classify.multilabel_report import write_multilabel

        if isinstance(data, ImageSet):
            images = data
        else:
            images, split = self.split_images(data, split, data_root, progress)
            _refuse_class_numbers(data, images, len(self.classes))
        targets = self.targets_in_our_order(images)
        logits, _ = self.logits(images.images, batch_size, tta)
        report = multilabel_report(logits, targets, self.classes, self.label_thresholds)
        report.tta = tta
        if out_dir is None and self.path is not None and not isinstance(data, ImageSet):
            out_dir = evaluation_folder(self.path, data, split, tta)
        if out_dir is not None:
            write_multilabel(report, Path(out_dir))
            report.out_dir = Path(out_dir)
        return report

    def targets_in_our_order(self, images: ImageSet) -> torch.Tensor:
        """The data's labels as multi-hot rows (N, C) in the checkpoint's label order: columns
        matched by name (a label the data never names is all negatives); single-label data is
        one label per image. A label the model does not know is one line."""
        ours = {name: i for i, name in enumerate(self.classes)}
        unknown = [name for name in images.classes if name not in ours]
        if unknown:
            raise CnnkitError(
                f"the data names labels the model does not know: {', '.join(unknown[:5])} (its "
                f"{len(self.classes)} labels: {', '.join(self.classes[:8])}"
                f"{', ...' if len(self.classes) > 8 else ''})"
            )
        columns = torch.tensor([ours[name] for name in images.classes], dtype=torch.int64)
        if images.multilabel:
            rows = images.labels
        else:
            rows = F.one_hot(images.labels, len(images.classes)).float()
        targets = torch.zeros(len(images), len(self.classes))
        targets[:, columns] = rows
        return targets


def _refuse_class_numbers(data: Any, images: ImageSet, labels: int) -> None:
    """An unnamed .npz names its classes by number (0, 1, ...), as it names a multi-label
    file's columns: a single-label file's class 0 is no 'label 0 present', so it is refused."""
    numbered = images.classes == [str(i) for i in range(len(images.classes))]
    if str(data).lower().endswith(".npz") and not images.multilabel and numbered:
        raise CnnkitError(
            f"{data} gives one class per image, by number (0, 1, ...), but this model scores "
            "each of its labels on its own: a class number is no label name; give its labels "
            f"as 0/1 columns, one per label (N, {labels})"
        )
