"""The small protocol every task fills in, and the flat task registry.

The engine (cnnkit.engine.fit) runs any task: it owns the stages, the loop, precision, compile,
EMA, lookahead, checkpoints, exact resume, signals, the run folder and progress, and asks the
task only for what differs: its data, its model, one step's losses, its metrics (one `score`
picks best.pt), the final test, and the checkpoint's task fields. `load(checkpoint)` gives the
task's predictor (a Classifier, a Detector).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TextIO

import torch
from torch import nn

from cnnkit.errors import CnnkitError, did_you_mean

if TYPE_CHECKING:
    from cnnkit.config import TrainConfig
    from cnnkit.engine.device import Precision
    from cnnkit.engine.loop import EpochProgress, StepOutput
    from cnnkit.engine.stages import Stage


@dataclass
class Metrics:
    """A task's evaluation: named figures (history.csv's val_<name> columns) and the name of
    the one that picks best.pt, which is better higher (accuracy, mAP) or, with
    `higher_is_better=False`, lower (a GAN's Fréchet distance). The figures are shown as they
    are, never negated."""

    values: dict[str, float]
    score_name: str
    higher_is_better: bool = True

    @property
    def score(self) -> float:
        return float(self.values[self.score_name])

    def better(self, score: float, than: float) -> bool:
        """Whether `score` beats `than` in this metric's direction."""
        return score > than if self.higher_is_better else score < than


class Task(Protocol):
    """One training run's task-specific half. Made by `make_task(cfg, device, precision)`."""

    name: str  # "classify" | "detect" | "segment" | "embed"
    score_name: str  # the metric that picks best.pt: "accuracy", "map"
    metric_names: tuple[str, ...]  # what evaluate() reports, in history.csv's order
    data: Any  # the splits: .train .val .test .classes .name .val_source .skipped
    init_seconds: float  # data-dependent initialisation time (airbench's clock counts it)

    def load_data(self, progress: bool) -> None: ...

    def build(self, resuming: bool) -> nn.Module:
        """The model on the device; a fresh run also runs its data-dependent init."""

    def steps_per_epoch(self) -> int: ...

    def enter_stage(self, model: nn.Module, stage: Stage) -> None:
        """Called when a stage starts (e.g. cache a frozen backbone's features)."""

    def trained_module(self, model: nn.Module) -> nn.Module:
        """The module that runs in a step (the model, or its head on cached features)."""

    def epoch(
        self, module: nn.Module, epoch: int, progress: EpochProgress
    ) -> tuple[Callable[[Any], StepOutput], Callable[[torch.Generator], Iterable[Any]]]:
        """(step, make_batches) for one training epoch: the step computes a batch's losses."""

    def evaluate(self, module: nn.Module, split: str) -> Metrics | None:
        """Metrics on "val" or "test" (None when the data has no such split)."""

    def test(self, model: nn.Module, best_epoch: int) -> dict[str, Any]:
        """The final test of best.pt's weights (already loaded): metrics.json's test fields."""

    def checkpoint_fields(self) -> dict[str, Any]:
        """What a predictor needs besides the weights: spec, classes, preprocessing, ..."""

    def describe_recipe(self) -> tuple[str, str]:
        """The task's parts of the recipe line: before the regularisation (augmentation) and
        after it (test-time options)."""

    def model_name(self) -> str:
        """The model's name for the console (the spec's)."""


# name -> "module:Class"; imported on first use, so importing cnnkit pulls in no task's code
TASKS: dict[str, str] = {
    "classify": "cnnkit.tasks.classify.task:ClassifyTask",
    "detect": "cnnkit.tasks.detect.task:DetectTask",
    "segment": "cnnkit.tasks.segment.task:SegmentTask",
    "embed": "cnnkit.tasks.embed.task:EmbedTask",
    "generate": "cnnkit.tasks.generate.task:GenerateTask",
}
# name -> "module:function(checkpoint dict, path, device, precision) -> predictor"
PREDICTORS: dict[str, str] = {
    "classify": "cnnkit.tasks.classify.predictor:Classifier.from_checkpoint",
    "detect": "cnnkit.tasks.detect.predictor:Detector.from_checkpoint",
    "segment": "cnnkit.tasks.segment.predictor:Segmenter.from_checkpoint",
    "embed": "cnnkit.tasks.embed.predictor:Embedder.from_checkpoint",
    "generate": "cnnkit.tasks.generate.predictor:Generator.from_checkpoint",
}
# options only some tasks take (None / 0 is "not given"), refused in one line by the others
TASK_OPTIONS: dict[str, tuple[str, ...]] = {
    "fpn_channels": ("detect",),
    "nms_iou": ("detect",),
    "box_vote": ("detect",),
    "box_loss": ("detect",),
    "test_image_size": ("segment",),
    "output_stride": ("segment",),
    "dice": ("segment",),
    "copy_paste": ("segment",),
    "class_weights": ("classify", "segment"),
    "sampler": ("classify", "embed"),
    "stream": ("classify",),
    "instances": ("segment",),
    "embedding_dim": ("embed",),
    "margin_loss": ("embed",),
    "margin": ("embed",),
    "margin_scale": ("embed",),
    "gan_loss": ("generate",),
    "spectral_norm": ("generate",),
    "latent_dim": ("generate",),
    "fd_images": ("generate",),
}
_TASK_NOUNS = {
    "classify": "classifiers",
    "detect": "detectors",
    "segment": "segmenters",
    "embed": "embedding models",
    "generate": "GANs",
}


def resolve_target(target: str) -> Any:
    """The object a "module:attr.path" registry entry names, imported on first use."""
    module, _, attr = target.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def check_task(name: str) -> str:
    if name not in TASKS:
        raise did_you_mean("task", str(name), list(TASKS))
    return name


def task_of_model(model: str) -> str:
    """The task a model name implies: a detection architecture means "detect", a segmentation
    architecture "segment", a GAN (dcgan, dcgan_conditional) "generate"."""
    from cnnkit.tasks.detect.names import is_detector
    from cnnkit.tasks.generate.names import is_gan
    from cnnkit.tasks.segment.names import is_segmenter

    if is_detector(model):
        return "detect"
    if is_gan(model):
        return "generate"
    return "segment" if is_segmenter(model) else "classify"


def task_name(cfg: TrainConfig) -> str:
    """The config's task: `task` when given, else the model's (a layer spec is a classifier
    unless the task says segment: then it is a fully convolutional segmenter)."""
    implied = task_of_model(cfg.model)
    if cfg.task is None:
        return implied
    check_task(cfg.task)
    if cfg.task == "embed" and implied == "classify":
        return "embed"  # any classifier architecture, its outputs the embedding
    if cfg.task == "segment" and implied == "classify":
        from cnnkit.tasks.segment.models import is_layer_spec

        if is_layer_spec(cfg.model):
            return "segment"
        raise CnnkitError(
            f"model '{cfg.model}' is a classifier; a segmenter is fcn, deeplabv3 or lraspp "
            f"(`cnnkit models --task segment`) or a layer spec"
        )
    if cfg.task != implied:
        hint = "; `cnnkit models --task detect` lists the detectors" if cfg.task == "detect" else ""
        raise CnnkitError(
            f"model '{cfg.model}' is one of the {_TASK_NOUNS[implied]}, not of the "
            f"{_TASK_NOUNS[cfg.task]}{hint}"
        )
    return cfg.task


def print_data_notes(
    data: Any, file: TextIO | None = None, skipped: list[tuple[str, str]] | None = None
) -> None:
    """What a reader noted (values mapped, splits replaced) and the files it skipped (or
    ``skipped``: those of the split in use), one line each, the skipped ones named up to three
    (`cnnkit datasets --inspect` lists them all)."""
    for note in getattr(data, "notes", []):
        print(f"cnnkit: {note}", file=file)
    skipped = getattr(data, "skipped", []) if skipped is None else skipped
    if skipped:
        first = ", ".join(f"{path} ({reason})" for path, reason in skipped[:3])
        more = len(skipped) - 3
        rest = f", and {more} more (`cnnkit datasets --inspect` lists them)" if more > 0 else ""
        print(f"cnnkit: skipped {len(skipped)} file(s): {first}{rest}", file=file)


def check_task_options(cfg: TrainConfig, name: str) -> None:
    """Refuse, in one line, an option that only other tasks take."""
    for key, tasks in TASK_OPTIONS.items():
        value = getattr(cfg, key)
        neutral = value in (None, 0, 0.0) or (isinstance(value, str) and value.lower() == "none")
        if name not in tasks and not neutral:
            only = " and ".join(_TASK_NOUNS[t] for t in tasks)
            raise CnnkitError(f"--{key.replace('_', '-')} is for {only}, not {_TASK_NOUNS[name]}")


def make_task(
    cfg: TrainConfig, device: torch.device, precision: Precision, channels_last: bool
) -> Task:
    name = task_name(cfg)
    check_task_options(cfg, name)
    return resolve_target(TASKS[name])(cfg, device, precision, channels_last)


def load_predictor(
    ckpt: dict[str, Any], path: Any, device: str = "auto", precision: str = "auto"
) -> Any:
    """The predictor of a loaded checkpoint's task (format 1 checkpoints are classifiers)."""
    name = ckpt.get("task", "classify")
    if name not in PREDICTORS:
        raise CnnkitError(f"{path} holds a '{name}' model, which this cnnkit cannot load")
    return resolve_target(PREDICTORS[name])(ckpt, path, device, precision)
