"""Semantic segmentation as a task: a class for every pixel, cross-entropy (+ Dice) per pixel,
validation mIoU picks best.pt."""

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
from cnnkit.tasks.detect.task import batch_starts
from cnnkit.tasks.segment.augment import SegmentAugment, augment_sample, paste_objects
from cnnkit.tasks.segment.batch import letterbox
from cnnkit.tasks.segment.dataset import SegmentationSet, SegmentationSplits
from cnnkit.tasks.segment.formats import read_segmentation
from cnnkit.tasks.segment.inference import check_tta, predict_classes
from cnnkit.tasks.segment.losses import class_weights, segmentation_losses
from cnnkit.tasks.segment.metrics import SegmentationMetrics, segmentation_metrics
from cnnkit.tasks.segment.models import (
    DEFAULT_IMAGE_SIZE,
    LAYERS,
    build_segmenter,
    segmenter_spec,
)

# options of the classification recipe a segmenter cannot use, refused in one line
UNSUPPORTED = {
    "label_smoothing": 0.0,
    "mixup": None,
    "cutmix": None,
    "erasing": None,
    "grayscale": None,
    "crop_padding": None,
    "trivialaugment": None,
    "randaugment": None,
    "alternating_flip": None,
    "input_size": None,
    "head": None,
    "dropout": 0.0,
}
METRIC_NAMES = ("miou", "pixel_accuracy", "dice")
EVAL_BATCH = 4


def check_segment_config(cfg: TrainConfig) -> None:
    """Refuse, in one line, the options that mean nothing for a segmenter."""
    for key, neutral in UNSUPPORTED.items():
        value = getattr(cfg, key)
        if value not in (neutral, None, 0, 0.0, False):
            raise CnnkitError(f"--{key.replace('_', '-')} is not available for segmentation")
    if cfg.resize not in (None, "letterbox"):
        raise CnnkitError(f"segmentation letterboxes its images, not '{cfg.resize}'")
    check_tta(cfg.tta)


def segment_augmentation(cfg: TrainConfig) -> SegmentAugment:
    """The --augment preset (none | basic | standard) with --flip / --rotation /
    --color-jitter over it."""
    if cfg.augment == "strong":
        raise CnnkitError("segmentation augmentation presets are none, basic and standard")
    settings = SegmentAugment.preset(cfg.augment)
    if cfg.flip is not None:
        settings = dataclasses.replace(settings, flip=0.5 if cfg.flip else 0.0)
    if cfg.rotation is not None:
        settings = dataclasses.replace(settings, rotation=float(cfg.rotation))
    if cfg.color_jitter is not None:
        settings = dataclasses.replace(settings, color_jitter=float(cfg.color_jitter))
    return settings


def refuse_one_class(
    data: str, classes: list[str], counts: torch.Tensor, ignored: int, instances: str | None
) -> None:
    """Masks whose labelled pixels are all one class teach nothing: most often 0/255 binary
    masks, whose 255 (the ignore value) was meant as the object."""
    present = [classes[i] for i in torch.nonzero(counts).flatten().tolist()]
    if len(present) != 1:
        return
    hint = ""
    if ignored and instances != "foreground":
        hint = (
            f"; the other {ignored:,} pixels are 255, which means 'ignore': for 0/255 masks "
            "(255 = the object) train with --instances foreground"
        )
    raise CnnkitError(
        f"{data}'s training masks hold only one class ('{present[0]}'), so there is nothing "
        f"to tell apart{hint}"
    )


class SegmentTask:
    """Semantic segmentation: a class mask per image, judged by mean IoU."""

    name = "segment"
    score_name = "miou"
    metric_names = METRIC_NAMES

    def __init__(
        self, cfg: TrainConfig, device: torch.device, precision: Precision, channels_last: bool
    ) -> None:
        check_segment_config(cfg)
        self.cfg = cfg
        self.device = device
        self.precision = precision
        self.channels_last = channels_last
        self.init_seconds = 0.0
        options = {"pretrained": cfg.pretrained, "weights": cfg.weights}
        options["output_stride"] = cfg.output_stride
        self.spec = segmenter_spec(cfg.model, **{k: v for k, v in options.items() if v})
        if cfg.optimizer == "muon" and self.spec.weights_kind is not None:
            raise CnnkitError(
                "--optimizer muon is for training from scratch; this segmenter starts from "
                f"{self.spec.weights_kind} weights (--pretrained none, or sgd / adamw)"
            )
        self.size = int(cfg.image_size or DEFAULT_IMAGE_SIZE)
        if self.size < 32:
            raise CnnkitError(f"segmentation image size must be at least 32, got {self.size}")
        self.test_size = int(cfg.test_image_size or self.size)
        if self.test_size < 32:
            raise CnnkitError(f"the test image size must be at least 32, got {self.test_size}")
        if self.test_size != self.size and self.spec.name == LAYERS:
            raise CnnkitError(
                f"a layer-spec segmenter is built for one input size: --test-image-size "
                f"({self.test_size}, given or from a preset) must equal --image-size ({self.size})"
            )
        self.augmentation = segment_augmentation(cfg)
        self.weights: torch.Tensor | None = None
        self._boxed: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.data: SegmentationSplits

    # ---- data and model ------------------------------------------------------------------------
    def load_data(self, progress: bool) -> None:
        cfg = self.cfg
        from cnnkit.data.datasets import named_dataset

        if named_dataset(cfg.data) is not None:
            raise CnnkitError(
                f"{cfg.data} is a classification dataset; give --data a segmentation dataset "
                "(image + mask PNGs, Pascal VOC, COCO JSON, or images + instance masks)"
            )
        self.data = read_segmentation(
            cfg.data,
            val_split=cfg.val_split,
            seed=cfg.seed,
            instances=cfg.instances or "auto",
            progress=progress,
        )
        print_data_notes(self.data)
        if self.data.train is None or len(self.data.train) == 0:
            raise CnnkitError(f"no training images in {cfg.data}")
        counts, ignored = self.data.train.pixel_counts()
        if int(counts.sum()) == 0:
            raise CnnkitError(f"{cfg.data} has no labelled pixels in its training masks")
        refuse_one_class(cfg.data, self.data.classes, counts, ignored, self.data.instances)
        self.weights = class_weights(cfg.class_weights, counts)
        if self.spec.arch == "deeplabv3" and min(cfg.batch_size, len(self.data.train)) < 2:
            raise CnnkitError(  # its ASPP pooling branch has BatchNorm over one value
                "DeepLabV3 trains on batches of at least 2 images: raise --batch-size (or use "
                "lraspp / fcn)"
            )

    def build(self, resuming: bool) -> nn.Module:
        model = build_segmenter(self.spec, len(self.data.classes), image_size=self.size)
        # the checkpoint's preprocessing: what the model normalises with inside
        self.mean_std = (model.mean.flatten().tolist(), model.std.flatten().tolist())
        if self.spec.weights_kind is not None:  # pretrained: the whole backbone trains
            model.default_trainable_blocks = "all"
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if self.weights is not None:
            self.weights = self.weights.to(self.device)
        return model.to(self.device)

    def steps_per_epoch(self) -> int:
        return len(batch_starts(len(self.data.train), self.cfg.batch_size))

    def enter_stage(self, model: nn.Module, stage: Stage) -> None:
        pass

    def trained_module(self, model: nn.Module) -> nn.Module:
        return model

    def letterboxed(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Training image i and its mask on the model's square canvas (made once)."""
        if i not in self._boxed:
            train = self.data.train
            image, mask, _ = letterbox(train.images[i], train.masks[i], self.size)
            self._boxed[i] = (image, mask)
        return self._boxed[i]

    def training_sample(
        self, i: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Training image i and its mask as a step sees them: letterboxed and augmented, and
        with --copy-paste's chance, another augmented training image's objects laid over."""
        image, mask = augment_sample(*self.letterboxed(i), generator, self.augmentation)
        chance = self.cfg.copy_paste
        if chance and float(torch.rand((), generator=generator)) < chance:
            j = int(torch.randint(len(self.data.train), (), generator=generator))
            source = augment_sample(*self.letterboxed(j), generator, self.augmentation)
            image, mask = paste_objects(image, mask, *source)
        return image, mask

    # ---- training ------------------------------------------------------------------------------
    def epoch(self, module: nn.Module, epoch: int, progress: EpochProgress):
        train: SegmentationSet = self.data.train
        batch_size, cfg = self.cfg.batch_size, self.cfg

        def make_batches(generator: torch.Generator):
            order = torch.randperm(len(train), generator=generator).tolist()
            for start in batch_starts(len(order), batch_size):
                yield order[start : start + batch_size]

        def step(indices: list[int]) -> StepOutput:
            # augmentation seeded by (seed, epoch, step): a resumed epoch replays the same
            generator = augment_generator(cfg.seed, epoch, progress.step)
            images, masks = [], []
            for i in indices:
                image, mask = self.training_sample(i, generator)
                images.append(image)
                masks.append(mask)
            inputs = torch.stack(images).to(self.device)
            if self.channels_last:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            targets = torch.stack(masks).to(self.device)
            with self.precision.autocast():
                logits = module(inputs)
            losses = segmentation_losses(logits, targets, self.weights, cfg.dice)
            return StepOutput(losses, len(indices))

        module.train()
        return step, make_batches

    # ---- evaluation ----------------------------------------------------------------------------
    def _metrics(self, module: nn.Module, data: SegmentationSet, tta: str) -> SegmentationMetrics:
        found = predict_classes(
            module, data.images, self.test_size, self.precision, EVAL_BATCH, tta
        )
        return segmentation_metrics(found, data.masks, data.classes)

    def evaluate(self, module: nn.Module, split: str) -> Metrics | None:
        data = getattr(self.data, split)
        if data is None or not len(data):
            return None
        result = self._metrics(module, data, "none")
        if result.pixels == 0:  # nothing labelled: no score to pick by
            return None
        return Metrics({name: float(getattr(result, name)) for name in METRIC_NAMES}, "miou")

    def test(self, model: nn.Module, best_epoch: int) -> dict[str, Any]:
        test = self.data.test
        result = self._metrics(model, test, self.cfg.tta)
        ious = ", ".join(
            f"{name} {'-' if iou is None else f'{iou:.4f}'}"
            for name, iou in list(result.per_class_iou.items())[:8]
        )
        tta = f", TTA {self.cfg.tta}" if self.cfg.tta != "none" else ""
        if result.pixels == 0:
            print(f"test: {len(test)} images without a labelled pixel: nothing to score")
        else:
            print(
                f"test mIoU (best.pt, epoch {best_epoch}{tta}): {result.miou:.4f}  pixel accuracy "
                f"{result.pixel_accuracy:.4f}  IoU: {ious}"
            )
        values = result.to_dict()
        values.pop("confusion_matrix")
        return {**{f"test_{k}": v for k, v in values.items()}, "test_images": len(test)}

    # ---- checkpoint and console ----------------------------------------------------------------
    def checkpoint_fields(self) -> dict[str, Any]:
        mean, std = self.mean_std
        return {
            "model": self.spec.to_dict(),
            "num_classes": len(self.data.classes),
            "classes": list(self.data.classes),
            "preprocessing": Preprocessing(  # what predictions use: the test size
                size=(self.test_size, self.test_size), resize="letterbox", mean=mean, std=std
            ).to_dict(),
            # "foreground" when the training masks were read so ("auto" on PedMasks), so
            # held-out images + instance masks without a classes.txt read the same way;
            # otherwise "auto", which reads each held-out layout as its own
            "instances": "foreground" if self.data.instances == "foreground" else "auto",
        }

    def model_name(self) -> str:
        return self.spec.name if self.spec.name != "layers" else "layer-spec FCN"

    def augmentation_text(self) -> str:
        """What the training images go through, for the console."""
        text = self.augmentation.describe()
        if self.cfg.copy_paste:
            text += f", copy-paste {self.cfg.copy_paste:g}"
        return text

    def describe_recipe(self) -> tuple[str, str]:
        loss = "cross-entropy"
        if self.cfg.class_weights not in (None, "none"):
            loss += f" (class weights {self.cfg.class_weights})"
        if self.cfg.dice:
            loss += f" + {self.cfg.dice:g} Dice"
        stride = f", output stride {self.spec.output_stride}" if self.spec.output_stride else ""
        tested = ""
        if self.test_size != self.size:
            tested = f" (validation and test at {self.test_size})"
        before = f"augment: {self.augmentation_text()}; input letterbox {self.size}{stride}{tested}"
        after = f"; loss {loss}" + (f"; test TTA {self.cfg.tta}" if self.cfg.tta != "none" else "")
        return before, after
