"""Inference from a checkpoint: files, folders, globs, PIL images and arrays -> top-k classes."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cnnkit.config import TrainConfig
from cnnkit.data import ImageSet, decode_image, load_data
from cnnkit.data.preprocess import Preprocessing
from cnnkit.engine.checkpoint import load_checkpoint, resolve_checkpoint_path
from cnnkit.engine.device import Precision, resolve_device, resolve_precision
from cnnkit.errors import CnnkitError
from cnnkit.inputs import ImageInput, decode_each, describe_input, expand_paths
from cnnkit.models import ModelSpec, create_model, resolve_spec
from cnnkit.models.pretrained import (
    pretrained_classes,
    pretrained_preprocessing,
    spec_for_rebuild,
)
from cnnkit.tasks.classify import ClassificationReport, classification_report, write_report
from cnnkit.tasks.classify.interpret import draw_top_losses, top_loss_entries
from cnnkit.tasks.classify.loop import image_input, pixel_input, predict_logits
from cnnkit.tasks.classify.metrics import decide
from cnnkit.tasks.classify.metrics import top_k as ranked_top_k
from cnnkit.tasks.classify.tta import tta_and_plain_logits
from cnnkit.tasks.evaluation_data import (
    check_split,
    choose_split,
    classes_in_our_order,
    evaluation_folder,
    trained_on,
)


@dataclass
class Prediction:
    """The top-k classes of one image, best first."""

    source: str
    top_k: list[tuple[str, float]]
    tta: str = "none"  # the test-time augmentation the probabilities average over
    # two classes with a threshold chosen on validation: the class it decides, and its
    # probability (which may be below 0.5: the threshold, not the larger probability, decides)
    decided: tuple[str, float] | None = None
    threshold: float | None = None

    @property
    def label(self) -> str:
        return self.decided[0] if self.decided is not None else self.top_k[0][0]

    @property
    def probability(self) -> float:
        return self.decided[1] if self.decided is not None else self.top_k[0][1]

    def to_dict(self) -> dict[str, Any]:
        out = {
            "source": self.source,
            "label": self.label,
            "probability": self.probability,
            "top_k": [{"label": c, "probability": p} for c, p in self.top_k],
            "tta": self.tta,
        }
        if self.threshold is not None:
            out["threshold"] = self.threshold
        return out


class Classifier:
    """A trained model with its class names and preprocessing, ready to predict and evaluate."""

    def __init__(
        self,
        model: nn.Module,
        classes: list[str],
        preprocessing: Preprocessing,
        device: str = "auto",
        precision: str = "auto",
        spec: ModelSpec | None = None,
        config: dict[str, Any] | None = None,
        path: Path | None = None,
        data_location: str | None = None,
        decision_threshold: float | None = None,
    ) -> None:
        self.device = resolve_device(device)
        self.precision = Precision(self.device, resolve_precision(precision, self.device))
        # channels-last: 2-4x faster convolutions on CPUs and GPUs (docs/benchmarks.md)
        self.channels_last = self.device.type != "mps"
        layout = torch.channels_last if self.channels_last else torch.preserve_format
        self.model = model.to(self.device, memory_format=layout).eval()
        self.classes = list(classes)
        self.preprocessing = preprocessing
        self.spec = spec
        self.config = config or {}
        self.path = path
        self.data_location = data_location  # where the training data was (absolute), if known
        if decision_threshold is not None and len(self.classes) != 2:
            raise CnnkitError("a decision threshold is for two classes only")
        # two classes: class 1 when its probability reaches this (chosen on validation)
        self.decision_threshold = decision_threshold

    task = "classify"
    multilabel = False  # MultilabelClassifier: independent labels, sigmoid and thresholds

    @classmethod
    def load(
        cls, path: str | os.PathLike, device: str = "auto", precision: str = "auto"
    ) -> Classifier:
        """Load a classifier's checkpoint file or run folder (its best.pt)."""
        path = resolve_checkpoint_path(path)
        ckpt = load_checkpoint(path)
        if ckpt["task"] != "classify":
            raise CnnkitError(f"{path} holds a {ckpt['task']} model, not a classifier")
        return cls.from_checkpoint(ckpt, path, device, precision)

    @classmethod
    def from_checkpoint(
        cls, ckpt: dict[str, Any], path: Path, device: str = "auto", precision: str = "auto"
    ) -> Classifier:
        """A classifier from a loaded checkpoint dict (load_checkpoint's)."""
        spec = spec_for_rebuild(ModelSpec.from_dict(ckpt["model"]))  # weights come from ckpt
        prep = Preprocessing.from_dict(ckpt["preprocessing"])
        model = create_model(spec, num_classes=ckpt["num_classes"], input_size=(3, *prep.size))
        try:
            model.load_state_dict(ckpt["state_dict"])
        except RuntimeError:
            raise CnnkitError(f"{path}: weights do not fit model '{spec.name}'") from None
        config, where = ckpt["config"], ckpt.get("data_location")
        threshold = ckpt.get("decision_threshold")
        if ckpt.get("label_thresholds") is not None:  # a multi-label model
            from cnnkit.tasks.classify.multilabel_predictor import MultilabelClassifier

            return MultilabelClassifier(
                model, ckpt["classes"], prep, device, precision, spec, config, path, where,
                label_thresholds=ckpt["label_thresholds"],
            )  # fmt: skip
        return cls(
            model, ckpt["classes"], prep, device, precision, spec, config, path, where, threshold
        )

    @classmethod
    def from_pretrained(
        cls,
        model: str,
        weights: str | os.PathLike | None = None,
        device: str = "auto",
        precision: str = "auto",
    ) -> Classifier:
        """An ImageNet classifier straight from pretrained weights, with its 1,000 class names."""
        spec = resolve_spec(model, pretrained="imagenet", weights=weights, head="imagenet")
        prep = pretrained_preprocessing(spec)
        classes = pretrained_classes(spec)
        if prep is None or classes is None:
            raise CnnkitError(f"model '{model}' has no ImageNet weights with class names")
        net = create_model(spec, num_classes=len(classes), input_size=(3, *prep.size))
        return cls(net, classes, prep, device, precision, spec)

    def save(self, path: str | os.PathLike) -> Path:
        """Write this classifier as a checkpoint (the format training writes), e.g. a
        ``from_pretrained`` ImageNet model, to export or serve it like a trained run."""
        from cnnkit.engine.checkpoint import save_checkpoint, unwrap_model

        if self.spec is None:
            raise CnnkitError("this classifier has no model spec to rebuild it from (exported?)")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(
            path,
            task="classify",
            model=self.spec.to_dict(),
            num_classes=len(self.classes),
            classes=list(self.classes),
            preprocessing=self.preprocessing.to_dict(),
            state_dict=unwrap_model(self.model).state_dict(),
            config=self.config,
            data_location=self.data_location,
            decision_threshold=self.decision_threshold,
            label_thresholds=getattr(self, "label_thresholds", None),
        )
        return path

    # ---- prediction ------------------------------------------------------------------------
    def decode(self, source: ImageInput) -> np.ndarray:
        """Decode (a path, bytes, PIL image or array) to the model's size, as predict does;
        "crop" with crop_pct < 1 resizes the shorter side to
        size / crop_pct and takes the centre, as the pretrained weights were evaluated."""
        prep = self.preprocessing
        crop_pct = float(prep.extra.get("crop_pct", 1.0)) if prep.resize == "crop" else 1.0
        if crop_pct >= 1.0:
            return decode_image(source, size=prep.size, resize=prep.resize)
        height, width = prep.size
        outer = (int(height / crop_pct), int(width / crop_pct))
        image = decode_image(source, size=outer, resize="crop")
        top, left = (outer[0] - height) // 2, (outer[1] - width) // 2
        return np.ascontiguousarray(image[top : top + height, left : left + width])

    def logits(
        self, images: torch.Tensor, batch_size: int = 256, tta: str = "none"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, logits without TTA) for uint8 images (N, 3, H, W); equal when tta="none"."""
        if getattr(self.model, "takes_pixels", False):  # an exported graph that normalises
            prepare = pixel_input(self.preprocessing)
        else:
            prepare = image_input(self.preprocessing, self.channels_last)
        if tta == "none":
            plain = predict_logits(self.model, images, prepare, self.precision, batch_size)
            return plain, plain
        return tta_and_plain_logits(self.model, images, prepare, self.precision, batch_size, tta)

    def predict_images(
        self, images: torch.Tensor, batch_size: int = 256, tta: str = "none"
    ) -> torch.Tensor:
        """Class probabilities (N, classes) for uint8 images (N, 3, H, W)."""
        return self.logits(images, batch_size, tta)[0].softmax(dim=1)

    def predict(
        self, inputs: ImageInput | list[ImageInput], top_k: int = 5, tta: str = "none"
    ) -> Prediction | list[Prediction]:
        """Predict one image (path, PIL image or HxWxC array) or a list of them.

        A file that cannot be read raises CnnkitError; use predict_paths to skip such files.
        """
        _check_top_k(top_k)
        single = not isinstance(inputs, (list, tuple))
        items = [inputs] if single else list(inputs)
        arrays = decode_each(items, self.decode)
        predictions = self._predict_arrays(arrays, [describe_input(i) for i in items], top_k, tta)
        return predictions[0] if single else predictions

    def predict_paths(
        self, patterns: list[str], top_k: int = 5, batch_size: int = 256, tta: str = "none"
    ) -> tuple[list[Prediction], list[tuple[str, str]]]:
        """Predict files, folders and globs; unreadable files come back as (path, reason)."""
        _check_top_k(top_k)
        arrays, names, errors = [], [], []
        for path in expand_paths(patterns):
            try:
                arrays.append(self.decode(path))
                names.append(str(path))
            except CnnkitError as exc:
                errors.append((str(path), str(exc)))
        predictions: list[Prediction] = []
        for i in range(0, len(arrays), batch_size):
            chunk = arrays[i : i + batch_size]
            predictions += self._predict_arrays(chunk, names[i : i + batch_size], top_k, tta)
        return predictions, errors

    def _predict_arrays(
        self, arrays: list[np.ndarray], names: list[str], top_k: int, tta: str = "none"
    ) -> list[Prediction]:
        if not arrays:
            return []
        images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
        probs = self.predict_images(images, tta=tta)
        k = min(top_k, len(self.classes))
        values, indices = ranked_top_k(probs, k)
        out = [
            Prediction(name, [(self.classes[j], p) for p, j in zip(vals, idx, strict=True)], tta)
            for name, vals, idx in zip(names, values.tolist(), indices.tolist(), strict=True)
        ]
        if self.decision_threshold is not None:
            for prediction, row in zip(out, probs.tolist(), strict=True):
                decided = 1 if row[1] >= self.decision_threshold else 0
                prediction.decided = (self.classes[decided], row[decided])
                prediction.threshold = self.decision_threshold
        return out

    # ---- evaluation ------------------------------------------------------------------------
    def evaluate(
        self,
        data: str | os.PathLike | ImageSet,
        split: str = "test",
        data_root: str | None = None,
        out_dir: str | os.PathLike | None = None,
        batch_size: int = 256,
        progress: bool = True,
        tta: str = "none",
    ) -> ClassificationReport:
        """Loss, top-1/top-5, per-class precision/recall/F1 and the confusion matrix.

        Reports are written to `out_dir` (default: beside the checkpoint) unless data is an
        ImageSet and no out_dir is given.
        """
        if isinstance(data, ImageSet):
            images = data
        else:
            images, split = self.split_images(data, split, data_root, progress)
        labels = self._labels_in_our_order(images)
        logits, plain = self.logits(images.images, batch_size, tta)
        report = classification_report(logits, labels, self.classes, self.decision_threshold)
        if tta != "none":
            report.tta = tta
            unaided = decide(plain.float().softmax(1), self.decision_threshold)
            report.top1_without_tta = float((unaided == labels).float().mean())
        if out_dir is None and self.path is not None and not isinstance(data, ImageSet):
            out_dir = evaluation_folder(self.path, data, split, tta)
        if out_dir is not None:
            report.top_losses = top_loss_entries(
                images, logits, labels, self.classes, self.decision_threshold
            )
            write_report(report, Path(out_dir))
            draw_top_losses(self, images, report.top_losses, Path(out_dir) / "top_losses.png")
            report.out_dir = Path(out_dir)
        return report

    def _trained_on(self, data: str | os.PathLike) -> bool:
        return trained_on(data, self.data_location, self.config)

    def split_images(
        self,
        data: str | os.PathLike,
        split: str = "test",
        data_root: str | None = None,
        progress: bool = True,
    ) -> tuple[ImageSet, str]:
        """The images of `split` and the split they are. On the model's own training data the
        splits are the run's: its seeded validation split held out of train, and, when the data
        has no test split, that validation split in its place. Other data without a test split
        is all evaluation data."""
        check_split(split)
        own = self._trained_on(data)
        splits = load_data(
            data,
            data_root=data_root or self.config.get("data_root"),
            val_split=float(self.config.get("val_split", TrainConfig.val_split)) if own else 0.0,
            seed=int(self.config.get("seed", 0)) if own else 0,
            image_size=self.config.get("image_size"),
            resize=self.preprocessing.resize,
            progress=progress,
        )
        if str(data).lower().endswith(".npz"):
            from cnnkit.data.medmnist import name_classes_by_index

            note = name_classes_by_index(splits, self.classes)
            if note:
                print(f"cnnkit: {note}", file=sys.stderr)
        return choose_split(splits, split, own, data)

    def _labels_in_our_order(self, images: ImageSet) -> torch.Tensor:
        """Map the data's label indices onto the checkpoint's class order."""
        if images.multilabel:
            raise CnnkitError(
                "the data is multi-label (several labels per image) but this model picks one "
                "class per image: train a model on it (multi-hot data trains multi-label)"
            )
        if list(images.classes) == self.classes:
            return images.labels
        mapping = classes_in_our_order(list(images.classes), self.classes)
        return mapping[images.labels]


def _check_top_k(top_k: int) -> None:
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise CnnkitError(f"top_k must be a whole number >= 1, got {top_k!r}")
