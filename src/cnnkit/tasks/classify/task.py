"""Classification as a task: class folders in, logits out, cross-entropy, accuracy picks best.pt.

Multi-label data (multi-hot targets, see multilabel.py) switches the loss to binary
cross-entropy, the tally to per-label accuracy, best.pt's score to the validation macro AUC, and
stores a threshold per label chosen on validation."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnkit.config import TrainConfig
from cnnkit.data import DataSplits, ImageSet, channel_stats, load_data
from cnnkit.data.augment import BatchAugment, alternating_flips, augment_generator
from cnnkit.data.preprocess import Preprocessing
from cnnkit.data.stream_splits import plan_stream
from cnnkit.engine.device import Precision
from cnnkit.engine.loop import EpochProgress
from cnnkit.engine.stages import Stage
from cnnkit.errors import CnnkitError
from cnnkit.models import ModelSpec, create_model, model_input_size, resolve_spec
from cnnkit.models.pretrained import pretrained_preprocessing
from cnnkit.models.transfer import TransferModel
from cnnkit.tasks.base import Metrics
from cnnkit.tasks.class_balance import balanced_sample_weights, class_weights
from cnnkit.tasks.classify import multilabel
from cnnkit.tasks.classify.features import backbone_features, can_cache_features
from cnnkit.tasks.classify.loop import (
    Prepare,
    classification_step,
    evaluate_epoch,
    feature_input,
    image_input,
    predict_logits,
    shuffled_batches,
    steps_per_epoch,
)
from cnnkit.tasks.classify.metrics import classification_report
from cnnkit.tasks.classify.roc import choose_threshold, rate_text
from cnnkit.tasks.classify.streaming import StreamedTraining
from cnnkit.tasks.classify.tta import tta_and_plain_logits


def classify_resize(cfg: TrainConfig) -> str:
    """The resize policy of a classifier's images: stretch (the default), crop or pad."""
    resize = cfg.resize or "stretch"
    if resize not in ("stretch", "crop", "pad"):
        raise CnnkitError(
            f"--resize {resize} is for detectors; a classifier takes stretch, crop or pad"
        )
    return resize


def model_options(cfg: TrainConfig) -> dict[str, Any]:
    """Builder options the config implies (only those set, so plain models take none)."""
    if cfg.pretrained == "coco":
        raise CnnkitError("--pretrained coco is for detectors; classifiers take imagenet")
    options = {
        "dropout": cfg.dropout,
        "pretrained": cfg.pretrained if cfg.starts_pretrained else None,
        "weights": cfg.weights,
        "head": cfg.head,
    }
    return {k: v for k, v in options.items() if v}


def build_model_for(
    cfg: TrainConfig, train_images: ImageSet, num_classes: int
) -> tuple[nn.Module, ModelSpec, Preprocessing]:
    """The model for this data and its preprocessing: pretrained weights bring their own mean
    and std; a model trained from scratch uses the training images' statistics."""
    spec = resolve_spec(cfg.model, **model_options(cfg))
    if cfg.input_size:
        size = (cfg.input_size, cfg.input_size)
    else:
        size = model_input_size(spec, tuple(train_images.images.shape[-2:]))
    model = create_model(spec, num_classes=num_classes, input_size=(3, *size))
    if isinstance(model, TransferModel):
        model.backbone_bn_eval = bool(cfg.starts_pretrained or cfg.weights)
    weights_prep = pretrained_preprocessing(spec)
    if weights_prep is not None:
        mean, std, interpolation = weights_prep.mean, weights_prep.std, weights_prep.interpolation
    else:
        (mean, std), interpolation = channel_stats(train_images), "bilinear"
        # a channel that never varies (grey images stored as RGB, a blank channel) has std 0:
        # normalising by it would turn every input into NaN
        std = tuple(max(s, 1 / 255) for s in std)
    prep = Preprocessing(
        size=size, resize=classify_resize(cfg), mean=mean, std=std, interpolation=interpolation
    )
    return model, spec, prep


DATA_INIT_IMAGES = 5000  # training images a model's init_from_data hook sees


def init_from_data(model: nn.Module, images: ImageSet, prepare: Prepare, seed: int) -> float:
    """Call the model's optional `init_from_data(batch)` hook (e.g. fastnet's frozen whitening
    layer) with a seeded random subset of the training images, preprocessed as in training;
    returns the seconds it took (0 without a hook)."""
    hook = getattr(model, "init_from_data", None)
    if not callable(hook):
        return 0.0
    started = time.perf_counter()
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    device = next(model.parameters()).device
    batch = images.images[order[:DATA_INIT_IMAGES]].to(device)
    hook(prepare(batch))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    print(
        f"cnnkit: {type(model).__name__} initialised from {len(batch)} training images "
        f"in {seconds:.2f}s"
    )
    return seconds


def refuse_detection_data(cfg: TrainConfig) -> None:
    """A detection dataset given to a classifier would train "photos vs masks" (its folders
    look like classes): say what to do instead."""
    from cnnkit.data.datasets import named_dataset
    from cnnkit.tasks.detect.formats import detect_format

    if named_dataset(cfg.data) is not None or not Path(cfg.data).exists():
        return
    try:
        found = detect_format(cfg.data)
    except CnnkitError:
        return
    raise CnnkitError(
        f"{cfg.data} is a detection dataset ({found}); train a detector on it, e.g. "
        "--model fcos_mobilenet_v2 (`cnnkit models --task detect` lists them)"
    )


UNPLANNED = object()  # ClassifyTask.data_plan before plan_data() ran


class ClassifyTask:
    """Image classification: the tutorials' task, and the default."""

    name = "classify"
    score_name = "accuracy"
    metric_names = ("loss", "accuracy")

    def __init__(
        self, cfg: TrainConfig, device: torch.device, precision: Precision, channels_last: bool
    ) -> None:
        self.cfg = cfg
        self.device = device
        self.precision = precision
        self.channels_last = channels_last
        self.init_seconds = 0.0
        self.data: DataSplits
        self.features: dict[str, ImageSet | None] | None = None  # cached backbone outputs
        augmentation = cfg.augmentation()
        self.augmentation = augmentation
        self.augment: BatchAugment | None = None
        self._flips: tuple[int, torch.Tensor] | None = None  # (epoch, alternating_flips)
        # training loss: cross-entropy with the run's label smoothing; reported losses are plain
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        self.sample_weights: torch.Tensor | None = None  # --sampler balanced's, per image
        # two classes: the threshold on class 1's probability chosen on this epoch's validation
        self.decision_threshold: float | None = None
        self.multilabel = False  # multi-hot targets: BCE, per-label thresholds (multilabel.py)
        self.label_thresholds: list[float] | None = None
        self.streamed: StreamedTraining | None = None  # --stream: training images from disk
        self.shards_batches = False  # True when streaming: batches are already this rank's
        self.data_plan: Any = UNPLANNED  # plan_data()'s choice (the engine shares rank 0's)

    # ---- data and model ------------------------------------------------------------------------
    def plan_data(self) -> Any:
        """Stream the training images or hold them in memory (None): a choice every process
        under torchrun must share, so the engine makes it on rank 0 and hands it on."""
        cfg = self.cfg
        refuse_detection_data(cfg)
        return plan_stream(cfg.data, cfg.stream, cfg.image_size, cfg.memory_budget)

    def load_data(self, progress: bool) -> None:
        cfg = self.cfg
        plan = self.plan_data() if self.data_plan is UNPLANNED else self.data_plan
        if plan is not None:
            self.streamed = StreamedTraining(cfg, plan, classify_resize(cfg))
            self.data = self.streamed.data
        else:
            self.data = load_data(
                cfg.data,
                data_root=cfg.data_root,
                val_split=cfg.val_split,
                seed=cfg.seed,
                image_size=cfg.image_size,
                resize=classify_resize(cfg),
                progress=progress,
            )
        if self.data.train is None or len(self.data.train) == 0:
            raise CnnkitError(f"no training images in {cfg.data}")
        if len(self.data.classes) < 2:
            found = ", ".join(self.data.classes) or "none"
            raise CnnkitError(
                f"{cfg.data} has {len(self.data.classes)} class ({found}); a classifier needs "
                "at least 2 class folders"
            )
        if not self.augmentation.is_identity():
            self.augment = BatchAugment(self.augmentation, len(self.data.classes))
        self.multilabel = self.data.train.multilabel
        if self.multilabel:
            val = self.data.val
            self.score_name = multilabel.score_name(val.labels if val is not None else None)
            self.metric_names = multilabel.TRAIN_METRICS
            self.loss_fn = multilabel.multilabel_loss(
                cfg.class_weights, cfg.sampler, self.data.train.labels, cfg.label_smoothing
            ).to(self.device)
            return
        self._balance(self.data.train.labels, len(self.data.classes))

    def _balance(self, labels: torch.Tensor, num_classes: int) -> None:
        """--class-weights (the training loss's) and --sampler balanced (the epochs' draws)."""
        cfg = self.cfg
        counts = torch.bincount(labels.long(), minlength=num_classes)
        weights = class_weights(cfg.class_weights, counts)
        if weights is not None:
            self.loss_fn = nn.CrossEntropyLoss(
                weight=weights.to(self.device), label_smoothing=cfg.label_smoothing
            )
        self.sample_weights = (
            balanced_sample_weights(labels, num_classes) if cfg.sampler == "balanced" else None
        )

    def build(self, resuming: bool) -> nn.Module:
        # streaming: statistics and init from a seeded sample of the training images
        train = self.streamed.sample(self.cfg.seed) if self.streamed else self.data.train
        model, self.spec, self.preprocessing = build_model_for(
            self.cfg, train, len(self.data.classes)
        )
        memory_format = torch.channels_last if self.channels_last else torch.preserve_format
        model = model.to(self.device, memory_format=memory_format)
        self.images_in: Prepare = image_input(self.preprocessing, self.channels_last)
        if not resuming:  # a resumed run restores these weights from last.pt instead
            self.init_seconds = init_from_data(model, train, self.images_in, self.cfg.seed)
        return model

    def steps_per_epoch(self) -> int:
        if self.streamed is not None:
            return self.streamed.steps(self.cfg.batch_size)
        return steps_per_epoch(len(self.data.train), self.cfg.batch_size)

    # ---- stages and steps ----------------------------------------------------------------------
    def enter_stage(self, model: nn.Module, stage: Stage) -> None:
        """With a frozen backbone and no augmentation, cache its features once: the head then
        trains on them, epoch after epoch, through the same step."""
        self.features = None
        if self.streamed is not None:  # features of a stream would not fit in memory either
            return
        if not can_cache_features(model, stage, len(self.data.train), self.augment is not None):
            return
        started = time.perf_counter()
        sets = {"train": self.data.train, "val": self.data.val}
        self.features = {
            name: backbone_features(model, s, self.images_in, self.precision)
            if s is not None
            else None
            for name, s in sets.items()
        }
        print(
            f"cnnkit: backbone frozen; features of {len(self.data.train)} training images "
            f"cached in {time.perf_counter() - started:.1f}s"
        )

    def trained_module(self, model: nn.Module) -> nn.Module:
        return model.head if self.features is not None else model

    def _split(self, name: str) -> tuple[ImageSet | None, Prepare]:
        if self.features is not None and name in self.features:
            return self.features[name], feature_input
        return getattr(self.data, name), self.images_in

    def _augment_step(
        self, epoch: int
    ) -> Any:  # (images, labels, step, indices) -> (images, targets)
        """Augmentation seeded by (seed, epoch, step), so a resumed epoch draws the same
        augmentations as an uninterrupted one; an alternating flip mirrors the images this
        epoch's seeded choice names."""
        if self.augment is None:
            return None
        cfg = self.cfg
        flips = None
        if self.augmentation.alternating_flip:
            if self._flips is None or self._flips[0] != epoch:
                self._flips = (epoch, alternating_flips(len(self.data.train), cfg.seed, epoch))
            flips = self._flips[1]

        def augment(
            images: torch.Tensor, labels: torch.Tensor, step: int, indices: torch.Tensor
        ) -> tuple[torch.Tensor, torch.Tensor]:
            generator = augment_generator(cfg.seed, epoch, step)
            flip = flips[indices] if flips is not None else None
            return self.augment(images, labels, generator, flip)

        return augment

    def epoch(self, module: nn.Module, epoch: int, progress: EpochProgress):
        data, prepare = self._split("train")
        augment = self._augment_step(epoch)
        module.train()
        step = classification_step(module, prepare, self.precision, self.loss_fn, augment, progress)
        if self.streamed is not None:
            self.shards_batches = True
            batches = self.streamed.batches(self.cfg.batch_size, self.device, self.sample_weights)
        else:
            batches = shuffled_batches(data, self.cfg.batch_size, self.device, self.sample_weights)
        return step, batches

    # ---- evaluation ----------------------------------------------------------------------------
    def evaluate(self, module: nn.Module, split: str) -> Metrics | None:
        data, prepare = self._split(split)
        if data is None or not len(data):
            return None
        if self.multilabel:
            logits = predict_logits(module, data.images, prepare, self.precision)
            if split == "val":
                probs = logits.sigmoid()
                self.label_thresholds = multilabel.choose_label_thresholds(probs, data.labels)
            values = multilabel.validation_values(logits, data.labels)
            return Metrics(values, self.score_name)  # type: ignore[arg-type]
        loss, accuracy, logits = evaluate_epoch(module, data, prepare, self.precision)
        if split == "val" and len(self.data.classes) == 2 and len(data):
            positive = logits.float().softmax(1)[:, 1]
            self.decision_threshold = choose_threshold(positive, data.labels)
        return Metrics({"loss": loss, "accuracy": accuracy}, self.score_name)

    def test(self, model: nn.Module, best_epoch: int) -> dict[str, Any]:
        """best.pt on the test split, with TTA when asked (one pass gives both: the plain
        logits are TTA's identity view)."""
        if self.multilabel:
            from cnnkit.tasks.classify.multilabel_task import multilabel_test

            return multilabel_test(self, model, best_epoch)
        test, cfg = self.data.test, self.cfg
        tta, plain = tta_and_plain_logits(
            model, test.images, self.images_in, self.precision, mode=cfg.tta
        )
        loss = float(nn.functional.cross_entropy(plain, test.labels))
        acc = float((plain.argmax(1) == test.labels).float().mean())
        fields: dict[str, Any] = {"test_loss": loss, "test_accuracy": acc, "test_images": len(test)}
        # validated on the test split itself (val_split 0, as airbench): best.pt was chosen
        # on these images, so say so rather than pass the figure off as unseen data's
        chosen = ", chosen on this split" if self.data.val_source == "test" else ""
        print(f"test accuracy (best.pt, epoch {best_epoch}{chosen}): {acc:.2%}  loss {loss:.4f}")
        if cfg.tta != "none":
            tta_acc = float((tta.argmax(1) == test.labels).float().mean())
            fields.update(tta=cfg.tta, test_accuracy_tta=tta_acc)
            print(
                f"test accuracy with TTA ({cfg.tta}): {tta_acc:.2%} "
                f"({(tta_acc - acc) * 100:+.2f} points)"
            )
        fields.update(self._ranking_fields(model, plain, test.labels))
        return fields

    def _ranking_fields(
        self, model: nn.Module, logits: torch.Tensor, labels: torch.Tensor
    ) -> dict[str, Any]:
        """AUC and average precision; for two classes the sensitivity and specificity at the
        threshold best.pt's validation chose (metrics.json's test fields)."""
        val = self.data.val
        if len(self.data.classes) == 2 and val is not None and len(val):  # best.pt's own choice
            val_logits = predict_logits(model, val.images, self.images_in, self.precision)
            self.decision_threshold = choose_threshold(
                val_logits.float().softmax(1)[:, 1], val.labels
            )
        report = classification_report(logits, labels, self.data.classes, self.decision_threshold)
        fields: dict[str, Any] = {}
        if report.auc is not None:
            fields.update(test_auc=report.auc, test_average_precision=report.average_precision)
            print(
                f"test ROC AUC {report.auc:.4f}  average precision {report.average_precision:.4f}"
            )
        point = report.operating
        if point is not None:
            fields.update(
                decision_threshold=point.threshold,
                test_sensitivity=point.sensitivity,
                test_specificity=point.specificity,
                test_accuracy_at_threshold=point.accuracy,  # what predict and evaluate give
            )
            print(
                f"test at threshold {point.threshold:.3f} on '{self.data.classes[1]}': "
                f"sensitivity {rate_text(point.sensitivity, 'positive')}  "
                f"specificity {rate_text(point.specificity, 'negative')}"
                f"  accuracy {point.accuracy:.2%} (predict and evaluate decide so)"
            )
        return fields

    # ---- checkpoint and console ----------------------------------------------------------------
    def checkpoint_fields(self) -> dict[str, Any]:
        return {
            "model": self.spec.to_dict(),
            "num_classes": len(self.data.classes),
            "classes": list(self.data.classes),
            "preprocessing": self.preprocessing.to_dict(),
            "decision_threshold": self.decision_threshold,
            "label_thresholds": self.label_thresholds,
        }

    def model_name(self) -> str:
        return self.spec.name

    def describe_recipe(self) -> tuple[str, str]:
        cfg = self.cfg
        extra = f"; tta {cfg.tta}" if cfg.tta != "none" else ""
        if cfg.class_weights not in (None, "none"):
            extra += f"; class weights {cfg.class_weights}"
        if cfg.sampler == "balanced":
            extra += "; sampler balanced"
        if self.multilabel:
            extra += f"; multi-label ({len(self.data.classes)} labels, binary cross-entropy)"
        return f"augment: {self.augmentation.describe()}", extra
