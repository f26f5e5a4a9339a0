"""The training config: defaults < YAML file < command-line flags, checked once where it enters."""

from __future__ import annotations

import dataclasses
import inspect
import operator
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from cnnkit.config_kinds import check_kinds
from cnnkit.errors import CnnkitError, did_you_mean

if TYPE_CHECKING:
    from cnnkit.data.augment import AugmentConfig


# the per-operation augmentation fields, which override the `augment` preset's values
AUGMENT_OPS = (
    "flip",
    "alternating_flip",
    "crop_padding",
    "rotation",
    "color_jitter",
    "erasing",
    "grayscale",
    "trivialaugment",
    "randaugment",
    "mixup",
    "cutmix",
)


PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # --precision's choices, for every command


@dataclass
class TrainConfig:
    """Everything a training run needs; stored resolved in the run folder and the checkpoint."""

    data: str = "cifar10-sample"  # named dataset, folder of class folders, or CSV list
    task: str | None = None  # classify | detect | segment; None: the model's task
    model: str = "simple_cnn"  # registry name, timm:NAME, a layer string, or a YAML layer file
    epochs: int = 10
    batch_size: int = 64
    optimizer: str = "adam"  # adam | adamw | sgd | muon
    lr: float = 1e-3
    momentum: float = 0.9  # sgd momentum (adam's beta1 stays 0.9)
    nesterov: bool = False
    muon_lr: float = 0.24  # muon: the filters' rate (a step's size relative to their norm)
    muon_momentum: float = 0.6  # muon: the filters' momentum
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    schedule: str = "constant"  # constant | linear | cosine | onecycle | triangle
    warmup_epochs: float = 0.0
    dropout: float = 0.0  # passed to models that take it (simple_cnn: before the last dense)
    # "imagenet" / "coco": start from those weights; "none": random initialisation (None: the
    # model's default: none for classifiers, ImageNet backbones and COCO detectors for detectors)
    pretrained: str | None = None
    weights: str | None = None  # a local weights file (instead of the cache or a download)
    head: str | None = None  # new classifier head as a layer spec (default: dropout,dense)
    input_size: int | None = None  # the model's input size (default: the weights' or the data's)
    fpn_channels: int | None = None  # detectors: the feature pyramid's width (default 128)
    nms_iou: float | None = None  # detectors: the NMS IoU that best.pt keeps (default 0.5)
    box_vote: float | None = None  # detectors: the box-voting IoU that best.pt keeps (0: off)
    box_loss: float | None = None  # detectors: weight of the box-regression loss (default 1)
    output_stride: int | None = None  # segmenters: 8 | 16 | 32 (default: the architecture's)
    dice: float = 0.0  # segmenters: weight of the Dice loss added to cross-entropy (0: off)
    copy_paste: float = 0.0  # segmenters: chance of pasting another image's objects (0: off)
    class_weights: str | None = None  # auto | none | w1,w2,... (cross-entropy)
    sampler: str | None = None  # classifiers: balanced (every class drawn equally often)
    instances: str | None = None  # segmentation masks: auto | foreground | classes
    embedding_dim: int | None = None  # embedding models: the embedding's length (default 512)
    margin_loss: str | None = None  # embedding models: arcface | cosface (default arcface)
    margin: float | None = None  # embedding models: the margin (arcface 0.5 rad, cosface 0.35)
    margin_scale: float | None = None  # embedding models: the logits' scale s (default 30)
    gan_loss: str | None = None  # GANs: bce (non-saturating, default) | hinge
    spectral_norm: bool | None = None  # GANs: spectral norm on the discriminator's layers
    latent_dim: int | None = None  # GANs: the generator's noise size (default 100)
    fd_images: int | None = None  # GANs: generated and real images per validation distance
    freeze: bool = False  # keep the whole backbone frozen: train the head only
    unfreeze: str | None = None  # backbone blocks to train: N (the last N) or "all"
    finetune: bool = False  # head_epochs head-only, then `epochs` with blocks unfrozen
    head_epochs: int = 1
    backbone_lr_ratio: float = 0.1  # backbone LR / head LR when fine-tuning (per block, lower)
    augment: str = "none"  # none | basic | standard | strong; the per-operation flags override it
    flip: bool | None = None  # None: as the preset says
    alternating_flip: bool | None = None  # mirror each image in every other epoch
    crop_padding: int | None = None
    rotation: float | None = None
    color_jitter: float | None = None
    erasing: float | None = None
    grayscale: float | None = None
    trivialaugment: bool | None = None
    randaugment: bool | None = None
    mixup: float | None = None
    cutmix: float | None = None
    ema: float = 0.0  # decay of an exponential moving average of the weights (0: off)
    lookahead: float = 0.0  # per-step decay of airbench's lookahead averaging (0: off)
    patience: int = 0  # early stopping: epochs without validation improvement (0: off)
    clip_grad: float = 0.0  # clip the gradient norm to this (0: off)
    tta: str = "none"  # test-time augmentation for the final test evaluation
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    precision: str = "auto"  # auto | fp32 | bf16 | fp16
    val_split: float = 0.1  # used when the data has no validation split of its own; 0: test split
    image_size: int | None = None  # decode size; default: the dataset's most common size
    # segmenters: the letterbox size validation, the test and predictions use (default:
    # image_size); larger than the training size often scores better after zoom augmentation
    test_image_size: int | None = None
    # classify: stretch | crop | pad (default stretch); detect: letterbox | shorter (letterbox)
    resize: str | None = None
    data_root: str | None = None  # where named datasets live (env CNNKIT_DATA)
    stream: bool | None = None  # stream training images from disk; None: over memory_budget
    memory_budget: str | None = None  # e.g. 8G or 50% (env CNNKIT_MEMORY_BUDGET; default 50%)
    workers: int | None = None  # streaming: decoding processes (default: the CPUs, at most 8)
    project: str = "runs"  # parent folder of run folders
    name: str | None = None  # run folder name; default: <model>-<n>
    time_limit: float = 0.0  # minutes of training steps; the epoch in progress then ends
    sync_bn: bool = False  # torchrun on GPUs: SyncBatchNorm (CPU: statistics averaged per epoch)
    dist_timeout: float | None = None  # torchrun: minutes a rank waits for the others (30)
    tensorboard: bool = False
    report: bool = True  # write report.html into the run folder at the end
    channels_last: bool = True
    compile: bool = False  # torch.compile the model for training (see bench/step_speed.py)
    preset: str | None = None  # a named config (cnnkit.presets); any other key overrides it

    @property
    def starts_pretrained(self) -> bool:
        """Pretrained weights were asked for by name (imagenet or coco; not None or "none")."""
        return self.pretrained not in (None, "none")

    def __new__(cls, *args: Any, **kwargs: Any) -> TrainConfig:
        # Remember which fields the caller gave, so a preset fills only the others.
        self = super().__new__(cls)
        self._given = frozenset([f.name for f in fields(cls)][: len(args)]) | frozenset(kwargs)
        return self

    def __post_init__(self) -> None:
        if self.preset is not None:  # layers: defaults < preset < the values given
            given = getattr(self, "_given", frozenset())
            layered = with_overrides({}, {key: getattr(self, key) for key in given})
            for key, value in layered.items():
                setattr(self, key, value)
        self.validate()

    def validate(self) -> None:
        """Reject values no run could use, with one line that names the option."""
        check_kinds(self)
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr}
        for key, value in positive.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise CnnkitError(f"{key} must be a positive number, got {value!r}")
        if not isinstance(self.epochs, int) or not isinstance(self.batch_size, int):
            raise CnnkitError("epochs and batch_size must be whole numbers")
        if not 0.0 <= self.val_split < 1.0:
            raise CnnkitError(f"val_split must be in [0, 1), got {self.val_split}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise CnnkitError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if not isinstance(self.dice, (int, float)) or isinstance(self.dice, bool) or self.dice < 0:
            raise CnnkitError(f"dice must be a number >= 0, got {self.dice!r}")
        if (
            not isinstance(self.copy_paste, (int, float))
            or isinstance(self.copy_paste, bool)
            or not 0.0 <= self.copy_paste <= 1.0
        ):
            raise CnnkitError(
                f"copy_paste must be a probability in [0, 1], got {self.copy_paste!r}"
            )
        if self.box_loss is not None and (
            not isinstance(self.box_loss, (int, float))
            or isinstance(self.box_loss, bool)
            or not 0 < self.box_loss <= 100
        ):
            raise CnnkitError(
                f"box_loss must be a number above 0, at most 100, got {self.box_loss!r}"
            )
        for key, zero_ok in (("nms_iou", False), ("box_vote", True)):  # detectors' selection
            value = getattr(self, key)
            if value is None:
                continue
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not number or not (0 <= value <= 1 if zero_ok else 0 < value <= 1):
                bounds = "from 0 to 1" if zero_ok else "above 0 and at most 1"
                raise CnnkitError(f"{key} must be a number {bounds}, got {value!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise CnnkitError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.sampler not in (None, "none", "balanced"):
            raise CnnkitError(f"--sampler is none or balanced, not '{self.sampler}'")
        if not self.muon_lr > 0 or not 0 <= self.muon_momentum < 1:
            raise CnnkitError(
                f"muon_lr must be positive and muon_momentum in [0, 1), got {self.muon_lr}"
                f" and {self.muon_momentum}"
            )
        if self.optimizer == "muon" and (self.starts_pretrained or self.weights):
            raise CnnkitError(
                "--optimizer muon trains from scratch: it resets each filter's norm, which"
                " would spoil pretrained weights; use sgd, adam or adamw with --pretrained"
            )
        if self.weight_decay < 0 or self.momentum < 0 or self.warmup_epochs < 0:
            raise CnnkitError("weight_decay, momentum and warmup_epochs must not be negative")
        choices = {
            "optimizer": ("adam", "adamw", "sgd", "muon"),
            "schedule": ("constant", "linear", "cosine", "onecycle", "triangle"),
            "precision": PRECISIONS,
            "resize": (None, "stretch", "crop", "pad", "letterbox", "shorter"),
        }
        for key, valid in choices.items():
            if getattr(self, key) not in valid:
                valid = tuple(v for v in valid if v is not None)
                raise did_you_mean(key.replace("_", "-"), str(getattr(self, key)), valid)
        for key in ("image_size", "input_size", "test_image_size"):
            value = getattr(self, key)
            if value is None:
                continue
            try:  # ints and numpy's integers, not floats (or bools)
                whole = operator.index(value) if not isinstance(value, bool) else -1
            except TypeError:
                whole = -1
            if whole <= 0:
                raise CnnkitError(f"{key} must be a positive whole number, got {value!r}")
            setattr(self, key, whole)
        if not 0.0 <= self.ema < 1.0:
            raise CnnkitError(f"ema must be a decay in [0, 1), e.g. 0.999; got {self.ema}")
        if not 0.0 <= self.lookahead < 1.0:
            raise CnnkitError(
                f"lookahead must be a decay in [0, 1), e.g. 0.95; got {self.lookahead}"
            )
        if not isinstance(self.patience, int) or self.patience < 0:
            raise CnnkitError(f"patience must be a whole number >= 0, got {self.patience}")
        if self.gan_loss not in (None, "bce", "hinge"):
            raise did_you_mean("gan-loss", str(self.gan_loss), ["bce", "hinge"])
        for key in ("latent_dim", "fd_images"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise CnnkitError(f"{key} must be a positive whole number, got {value!r}")
        if self.dist_timeout is not None and (
            not isinstance(self.dist_timeout, (int, float)) or self.dist_timeout <= 0
        ):
            raise CnnkitError(f"dist_timeout must be minutes > 0, got {self.dist_timeout!r}")
        if not isinstance(self.time_limit, (int, float)) or self.time_limit < 0:
            raise CnnkitError(f"time_limit must be minutes >= 0, got {self.time_limit!r}")
        if self.memory_budget is not None:
            from cnnkit.data.budget import check_budget

            check_budget(self.memory_budget)
        if self.workers is not None and (not isinstance(self.workers, int) or self.workers < 0):
            raise CnnkitError(f"workers must be a whole number >= 0, got {self.workers!r}")
        if self.clip_grad < 0:
            raise CnnkitError(f"clip_grad must not be negative, got {self.clip_grad}")
        if self.embedding_dim is not None and (
            not isinstance(self.embedding_dim, int) or self.embedding_dim < 2
        ):
            raise CnnkitError(
                f"embedding_dim must be a whole number >= 2, got {self.embedding_dim}"
            )
        if self.margin_loss not in (None, "arcface", "cosface"):
            raise did_you_mean("margin loss", str(self.margin_loss), ["arcface", "cosface"])
        if self.margin is not None and not 0.0 <= self.margin < 1.5:
            raise CnnkitError(f"margin must be in [0, 1.5), got {self.margin}")
        if self.margin_scale is not None and self.margin_scale <= 0:
            raise CnnkitError(f"margin_scale must be positive, got {self.margin_scale}")
        if self.task is not None:
            from cnnkit.tasks.base import check_task

            check_task(self.task)
        from cnnkit.tasks.classify.tta import check_mode

        check_mode(self.tta)
        self.augmentation()  # rejects an unknown preset or a bad value now, not mid-run
        if self.pretrained is not None:
            self.pretrained = str(self.pretrained).strip().lower()
            if self.pretrained not in ("imagenet", "coco", "none"):
                raise did_you_mean(
                    "pretrained weights", self.pretrained, ["imagenet", "coco", "none"]
                )
        if self.unfreeze is not None:
            self.unfreeze = str(self.unfreeze).strip().lower()
            if self.unfreeze != "all" and not (self.unfreeze.isdigit()):
                raise CnnkitError(
                    f"unfreeze must be a number of blocks or 'all', got {self.unfreeze!r}"
                )
        if self.finetune and self.freeze:
            raise CnnkitError("--finetune unfreezes the backbone; it cannot be used with --freeze")
        if not isinstance(self.head_epochs, int) or self.head_epochs < 1:
            raise CnnkitError(
                f"head_epochs must be a positive whole number, got {self.head_epochs}"
            )
        if not 0 < self.backbone_lr_ratio <= 1:
            raise CnnkitError(f"backbone_lr_ratio must be in (0, 1], got {self.backbone_lr_ratio}")
        if self.preset is not None:
            from cnnkit.presets import preset_config

            preset_config(self.preset)  # an unknown name fails here, with the closest one

    def augment_overrides(self) -> dict[str, Any]:
        """The per-operation augmentation flags that were given (None means the preset's)."""
        given = {k: getattr(self, k) for k in AUGMENT_OPS if getattr(self, k) is not None}
        if given.get("flip") is False:  # --no-flip: no flips at all, alternating ones included
            given["alternating_flip"] = False
        return given

    def augmentation(self) -> AugmentConfig:
        """The augmentation preset with the per-operation flags applied."""
        from cnnkit.data.augment import augment_config

        return augment_config(self.augment, **self.augment_overrides())

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> TrainConfig:
        known = {f.name for f in fields(cls)}
        for key in values:
            if key not in known:
                err = did_you_mean(f"key in {source}", str(key), known)
                raise CnnkitError(str(err))
        try:  # a `preset` among the values fills the keys not given (see __post_init__)
            return cls(**values)
        except TypeError as exc:  # a wrong type reached a comparison in validate()
            raise CnnkitError(f"invalid value in {source}: {exc}") from None


# help() and inspect show the fields, not __new__'s (*args, **kwargs)
TrainConfig.__signature__ = inspect.signature(
    TrainConfig.__init__
).replace(  # type: ignore[attr-defined]
    parameters=list(inspect.signature(TrainConfig.__init__).parameters.values())[1:]
)


def config_keys() -> list[str]:
    return [f.name for f in fields(TrainConfig)]


def read_yaml_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read a run.yaml; unknown keys are rejected later by TrainConfig.from_dict."""
    path = Path(path)
    if not path.is_file():
        raise CnnkitError(f"config file not found: {path}")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        where = f" (line {line + 1})" if line is not None else ""
        raise CnnkitError(f"config file {path} is not valid YAML{where}") from None
    if not isinstance(values, dict):
        raise CnnkitError(f"config file {path} must be a mapping of option: value")
    return {str(k).replace("-", "_"): v for k, v in values.items()}


def _layer(base: dict[str, Any], layer: dict[str, Any]) -> dict[str, Any]:
    """`base` updated by `layer`. An `augment` in `layer` replaces the augmentation whole: the
    per-operation settings of `base` go, so `--augment none` means no augmentation at all."""
    if "augment" in layer:
        base = {**base, **dict.fromkeys(AUGMENT_OPS)}
    return {**base, **layer}


def with_overrides(values: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    """The one layering rule: `values` (an old config, a resumed run's, or {} for the
    defaults), then the `preset` named among the overrides, then the other overrides that were
    given (not None). The preset replaces every key it sets, and the keys given with it beat it;
    an `augment` (the preset's or one given) replaces the augmentation below it whole."""
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    base = dict(values)
    if "preset" in given:
        from cnnkit.presets import preset_config

        base = _layer(base, preset_config(str(given["preset"])))
    return _layer(base, given)


# what a resumed run keeps: the saved weights are this model's, its epochs see this data
RESUME_KEEPS = (
    "model",
    "data",
    "output_stride",
    "instances",
    "fpn_channels",
    "latent_dim",
    "spectral_norm",
    "test_image_size",
)


def resume_values(saved: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    """A resumed run's config values: its saved config < a preset < the flags (with_overrides).
    A new model is refused (the saved weights are the old one's), and so is new data from a
    preset; a `data` flag may name where the run's data is now."""
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    values = with_overrides(saved, given)
    for key in RESUME_KEEPS:
        old, new = saved.get(key), values.get(key)
        if new == old or (key == "data" and key in given):
            continue
        who = f"the {key} given" if key in given else f"preset {given.get('preset')}"
        if key == "model":
            raise CnnkitError(
                f"{who} changes the resumed run's model ({old} -> {new}); its weights are "
                f"{old}'s: train a new run for {new}"
            )
        if key == "test_image_size":
            raise CnnkitError(
                f"{who} changes the resumed run's test image size ({old} -> {new}); its best.pt "
                f"was chosen by validation at {old or 'the training size'}: train a new run"
            )
        if key in ("output_stride", "instances", "fpn_channels", "latent_dim", "spectral_norm"):
            raise CnnkitError(
                f"{who} changes the resumed run's {key} ({old} -> {new}); its weights were "
                f"trained with {old}: train a new run for {new}"
            )
        raise CnnkitError(
            f"{who} changes the resumed run's data ({old} -> {new}); add --data {old} to keep it"
        )
    return values


def build_config(
    config_file: str | os.PathLike | None = None, overrides: dict[str, Any] | None = None
) -> TrainConfig:
    """Defaults, then a `preset` (named in the file or the flags), then the YAML file, then
    explicit overrides (flags that were given)."""
    values: dict[str, Any] = {}
    source = "config"
    if config_file is not None:
        values.update(read_yaml_config(config_file))
        source = str(config_file)
    TrainConfig.from_dict(values, source)  # reject unknown keys of the file itself first
    flags = {k: v for k, v in (overrides or {}).items() if v is not None}
    return TrainConfig.from_dict(with_overrides({}, _layer(values, flags)), source)
