"""Object detection as a task: boxes in, boxes out, the detector's own losses, mAP picks best.pt."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from cnnkit.config import TrainConfig
from cnnkit.data.augment import augment_generator
from cnnkit.data.preprocess import Preprocessing
from cnnkit.engine.device import Precision
from cnnkit.engine.loop import EpochProgress, StepOutput
from cnnkit.engine.stages import Stage
from cnnkit.errors import CnnkitError
from cnnkit.tasks.base import Metrics, print_data_notes
from cnnkit.tasks.detect.augment import DetectAugment, augment_sample
from cnnkit.tasks.detect.batch import resize_batch
from cnnkit.tasks.detect.dataset import DetectionSet, DetectionSplits
from cnnkit.tasks.detect.formats import read_detection
from cnnkit.tasks.detect.inference import (
    configure_input,
    evaluation_thresholds,
    original_targets,
    predict_stored,
    to_original,
)
from cnnkit.tasks.detect.metrics import detection_metrics
from cnnkit.tasks.detect.models import (
    DEFAULT_IMAGE_SIZE,
    DEFAULT_TRAINABLE_BLOCKS,
    build_detector,
    detector_spec,
)
from cnnkit.tasks.detect.postprocess import PostProcess

# options of the classification recipe a detector cannot use, refused in one line
UNSUPPORTED = {
    "label_smoothing": 0.0,
    "mixup": None,
    "cutmix": None,
    "erasing": None,
    "grayscale": None,
    "rotation": None,
    "crop_padding": None,
    "trivialaugment": None,
    "randaugment": None,
    "alternating_flip": None,
    "tta": "none",
    "optimizer": "muon",
    "input_size": None,
    "head": None,
    "dropout": 0.0,
}
RESIZES = ("letterbox", "shorter")
METRIC_NAMES = ("map", "map_50", "map_75")


def require_detect_extra() -> None:
    """mAP needs torchmetrics and pycocotools (the `detect` extra): say so before training."""
    import importlib.util

    missing = [m for m in ("torchmetrics", "pycocotools") if importlib.util.find_spec(m) is None]
    if missing:
        raise CnnkitError(
            f"detection needs {' and '.join(missing)} for its mAP: pip install 'cnnkit[detect]'"
        )


def check_detect_config(cfg: TrainConfig) -> None:
    """Refuse, in one line, the options that mean nothing for a detector."""
    for key, neutral in UNSUPPORTED.items():
        value = getattr(cfg, key)
        if key == "optimizer":
            if value == neutral:
                raise CnnkitError("--optimizer muon is for training classifiers from scratch")
        elif value not in (neutral, None, 0, 0.0, False):
            raise CnnkitError(f"--{key.replace('_', '-')} is not available for detection")
    if resize_mode(cfg) not in RESIZES:
        raise CnnkitError(f"detection resizes by letterbox or shorter, not '{cfg.resize}'")


def batch_starts(n: int, batch_size: int) -> range:
    """Where an epoch's batches start; a final batch of one image is dropped (BatchNorm in a
    detector's heads cannot train on one image), as classification does."""
    return range(0, n - (1 if n % batch_size == 1 and n > 1 else 0), batch_size)


def resize_mode(cfg: TrainConfig) -> str:
    return cfg.resize or "letterbox"


def detect_augmentation(cfg: TrainConfig) -> DetectAugment:
    """The --augment preset (none | basic | standard) with --flip / --color-jitter over it."""
    if cfg.augment == "strong":
        raise CnnkitError("detection augmentation presets are none, basic and standard")
    settings = DetectAugment.preset(cfg.augment)
    if cfg.flip is not None:
        settings = dataclasses.replace(settings, flip=0.5 if cfg.flip else 0.0)
    if cfg.color_jitter is not None:
        settings = dataclasses.replace(settings, color_jitter=float(cfg.color_jitter))
    return settings


BOX_LOSSES = ("bbox_regression", "loss_box_reg", "loss_rpn_box_reg")  # weighted by --box-loss


class DetectTask:
    """Object detection: boxes with class labels, judged by COCO-style mAP."""

    name = "detect"
    score_name = "map"
    metric_names = METRIC_NAMES

    def __init__(
        self, cfg: TrainConfig, device: torch.device, precision: Precision, channels_last: bool
    ) -> None:
        check_detect_config(cfg)
        require_detect_extra()
        self.cfg = cfg
        self.device = device
        self.precision = precision
        self.init_seconds = 0.0
        self.spec = detector_spec(cfg.model, **self._spec_options())
        self.size = cfg.image_size or DEFAULT_IMAGE_SIZE[self.spec.arch]
        self.mode = resize_mode(cfg)
        self.augmentation = detect_augmentation(cfg)
        # what predictions show by default (--conf / --iou change it); evaluation ranks all
        self.postprocess = PostProcess(
            score_threshold=0.25, iou_threshold=cfg.nms_iou or 0.5, box_vote=cfg.box_vote or 0.0
        )
        self.data: DetectionSplits

    def augment(self, image: torch.Tensor, target: Any, generator: torch.Generator) -> tuple:
        """One training sample augmented (boxes moved with the pixels), seeded by generator."""
        return augment_sample(image, target, generator, self.augmentation)

    def _spec_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if self.cfg.pretrained:
            options["pretrained"] = self.cfg.pretrained
        if self.cfg.weights:
            options["weights"] = self.cfg.weights
        if self.cfg.fpn_channels is not None:
            options["fpn_channels"] = self.cfg.fpn_channels
        return options

    # ---- data and model ------------------------------------------------------------------------
    def load_data(self, progress: bool) -> None:
        cfg = self.cfg
        from cnnkit.data.datasets import named_dataset

        if named_dataset(cfg.data) is not None:
            raise CnnkitError(
                f"{cfg.data} is a classification dataset; give --data a detection dataset "
                "(COCO JSON, YOLO data.yaml, Pascal VOC, or images + instance masks)"
            )
        # stored no larger than the model's input: letterboxing then only pads
        self.data = read_detection(
            cfg.data, val_split=cfg.val_split, seed=cfg.seed, max_size=self.size, progress=progress
        )
        print_data_notes(self.data)
        if self.data.train is None or len(self.data.train) == 0:
            raise CnnkitError(f"no training images in {cfg.data}")
        if self.data.train.box_count() == 0:
            raise CnnkitError(f"{cfg.data} has no boxes in its training images")

    def build(self, resuming: bool) -> nn.Module:
        model = build_detector(
            self.spec,
            num_classes=len(self.data.classes),
            image_size=self.size,
            postprocess=self.postprocess,
        )
        if self.spec.weights_kind is not None:  # pretrained: the last stages train by default
            model.default_trainable_blocks = DEFAULT_TRAINABLE_BLOCKS
        configure_input(model, self.size, self.mode)
        self.transform = model.model.transform  # its mean and std go in the checkpoint
        return model.to(self.device)

    def loss_weight(self, name: str) -> float:
        """The weight of one of the detector's loss items in the total: --box-loss for the box
        regression (torchvision names it bbox_regression in FCOS, RetinaNet and SSD, and
        loss_box_reg / loss_rpn_box_reg in Faster R-CNN), 1 for the others."""
        return float(self.cfg.box_loss or 1.0) if name in BOX_LOSSES else 1.0

    def steps_per_epoch(self) -> int:
        return len(batch_starts(len(self.data.train), self.cfg.batch_size))

    def enter_stage(self, model: nn.Module, stage: Stage) -> None:
        pass

    def trained_module(self, model: nn.Module) -> nn.Module:
        return model

    # ---- training ------------------------------------------------------------------------------
    def epoch(self, module: nn.Module, epoch: int, progress: EpochProgress):
        train: DetectionSet = self.data.train
        batch_size, cfg = self.cfg.batch_size, self.cfg

        def make_batches(generator: torch.Generator):
            order = torch.randperm(len(train), generator=generator).tolist()
            for start in batch_starts(len(order), batch_size):
                yield order[start : start + batch_size]

        def step(indices: list[int]) -> StepOutput:
            # augmentation seeded by (seed, epoch, step): a resumed epoch replays the same
            generator = augment_generator(cfg.seed, epoch, progress.step)
            images, targets = [], []
            for i in indices:
                image, target = self.augment(train.images[i], train.targets[i], generator)
                images.append(image)
                targets.append(target)
            batch = resize_batch(images, targets, self.size, self.mode)
            inputs = batch.model_input(self.device)
            with self.precision.autocast():
                losses = module(inputs, batch.targets)
            losses = {name: value.float() for name, value in losses.items()}
            total = sum(self.loss_weight(name) * value for name, value in losses.items())
            return StepOutput({"loss": total, **losses}, len(indices))

        module.train()
        return step, make_batches

    # ---- evaluation ----------------------------------------------------------------------------
    def _metrics(self, module: nn.Module, data: DetectionSet):
        with evaluation_thresholds(module, self.postprocess):
            found = predict_stored(module, data.images, self.size, self.mode, self.precision)
        return detection_metrics(to_original(found, data), original_targets(data), data.classes)

    def evaluate(self, module: nn.Module, split: str) -> Metrics | None:
        data = getattr(self.data, split)
        if data is None or not len(data):
            return None
        if data.box_count() == 0:  # COCO's mAP is -1 without ground truth: no score to pick by
            return None
        result = self._metrics(module, data)
        return Metrics({name: float(getattr(result, name)) for name in METRIC_NAMES}, "map")

    def test(self, model: nn.Module, best_epoch: int) -> dict[str, Any]:
        test = self.data.test
        if test.box_count() == 0:  # COCO's -1 is no score: say so, record none
            print(f"test: {len(test)} images without a true box, so no mAP to report")
            return {"test_map": None, "test_images": len(test)}
        result = self._metrics(model, test)
        print(
            f"test mAP (best.pt, epoch {best_epoch}): {result.map:.4f}  mAP@.5 "
            f"{result.map_50:.4f}  mAP@.75 {result.map_75:.4f}"
        )
        return {**{f"test_{k}": v for k, v in result.to_dict().items()}, "test_images": len(test)}

    # ---- checkpoint and console ----------------------------------------------------------------
    def checkpoint_fields(self) -> dict[str, Any]:
        mean, std = self.transform.image_mean, self.transform.image_std
        return {
            "model": self.spec.to_dict(),
            "num_classes": len(self.data.classes),
            "classes": list(self.data.classes),
            "preprocessing": Preprocessing(
                size=(self.size, self.size), resize=self.mode, mean=mean, std=std
            ).to_dict(),
            "postprocess": self.postprocess.to_dict(),
        }

    def model_name(self) -> str:
        return self.spec.name

    def describe_recipe(self) -> tuple[str, str]:
        return f"augment: {self.augmentation.describe()}; input {self.mode} {self.size}", ""
