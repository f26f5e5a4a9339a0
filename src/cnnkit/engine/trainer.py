"""train(config) -> a run folder: the whole training run, resumable after Ctrl-C or a kill."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnkit.config import TrainConfig, with_overrides
from cnnkit.data import DataSplits, ImageSet, channel_stats, load_data
from cnnkit.data.augment import BatchAugment, alternating_flips, augment_generator
from cnnkit.data.datasets import data_location
from cnnkit.data.preprocess import Preprocessing
from cnnkit.engine import run_folder
from cnnkit.engine.checkpoint import load_checkpoint, save_checkpoint, unwrap_model
from cnnkit.engine.console import EpochBar, StopFlag
from cnnkit.engine.device import Precision, resolve_device, resolve_precision, tune_backend
from cnnkit.engine.early_stopping import EarlyStopping
from cnnkit.engine.ema import ModelEMA
from cnnkit.engine.lookahead import Lookahead
from cnnkit.engine.loop import (
    EpochProgress,
    Prepare,
    StepContext,
    evaluate_epoch,
    feature_input,
    image_input,
    steps_per_epoch,
    train_one_epoch,
)
from cnnkit.engine.optim import build_optimizer, build_scheduler
from cnnkit.engine.stages import (
    apply_stage,
    backbone_features,
    can_cache_features,
    plan_stages,
    stage_at,
)
from cnnkit.errors import CnnkitError
from cnnkit.models import ModelSpec, create_model, model_input_size, resolve_spec
from cnnkit.models.pretrained import pretrained_preprocessing
from cnnkit.models.transfer import TransferModel
from cnnkit.tasks.classify.tta import tta_and_plain_logits


@dataclass
class RunResult:
    """Where a run wrote its files and what it measured."""

    run_dir: Path
    metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    interrupted: bool = False
    stopped_by: int | None = None  # the signal that interrupted it (SIGINT, SIGTERM)

    @property
    def best(self) -> Path:
        return self.run_dir / "best.pt"

    @property
    def last(self) -> Path:
        return self.run_dir / "last.pt"


def model_options(cfg: TrainConfig) -> dict[str, Any]:
    """Builder options the config implies (only those set, so plain models take none)."""
    options = {
        "dropout": cfg.dropout,
        "pretrained": cfg.pretrained,
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
        model.backbone_bn_eval = bool(cfg.pretrained or cfg.weights)
    weights_prep = pretrained_preprocessing(spec)
    if weights_prep is not None:
        mean, std, interpolation = weights_prep.mean, weights_prep.std, weights_prep.interpolation
    else:
        (mean, std), interpolation = channel_stats(train_images), "bilinear"
    prep = Preprocessing(
        size=size, resize=cfg.resize, mean=mean, std=std, interpolation=interpolation
    )
    return model, spec, prep


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


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


def start_epoch(model: nn.Module, epoch: int) -> None:
    """Call the model's optional `start_epoch(epoch)` hook before training epoch `epoch`
    (0-based, over the run; e.g. fastnet freezes its whitening bias after a few epochs)."""
    hook = getattr(unwrap_model(model), "start_epoch", None)
    if callable(hook):
        hook(epoch)


class Trainer:
    """One training run. `train()` below is the usual entry point."""

    def __init__(
        self, cfg: TrainConfig, run_dir: Path, progress: bool = True, resuming: bool = False
    ) -> None:
        self.cfg = cfg
        self.run_dir = run_dir
        self.show_progress = progress
        self.device = resolve_device(cfg.device)
        self.precision = Precision(self.device, resolve_precision(cfg.precision, self.device))
        tune_backend(self.device)
        torch.manual_seed(cfg.seed)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.data: DataSplits = load_data(
            cfg.data,
            data_root=cfg.data_root,
            val_split=cfg.val_split,
            seed=cfg.seed,
            image_size=cfg.image_size,
            resize=cfg.resize,
            progress=progress,
        )
        if self.data.train is None or len(self.data.train) == 0:
            raise CnnkitError(f"no training images in {cfg.data}")
        self.data_location = data_location(cfg.data)  # recorded in every checkpoint
        if len(self.data.classes) < 2:
            found = ", ".join(self.data.classes) or "none"
            raise CnnkitError(
                f"{cfg.data} has {len(self.data.classes)} class ({found}); a classifier needs "
                "at least 2 class folders"
            )
        model, self.spec, self.preprocessing = build_model_for(
            cfg, self.data.train, len(self.data.classes)
        )
        self.channels_last = cfg.channels_last and self.device.type != "mps"
        memory_format = torch.channels_last if self.channels_last else torch.preserve_format
        self.model = model.to(self.device, memory_format=memory_format)
        self.images_in: Prepare = image_input(self.preprocessing, self.channels_last)
        self.init_seconds = 0.0
        if not resuming:  # a resumed run restores these weights from last.pt instead
            self.init_seconds = init_from_data(
                self.model, self.data.train, self.images_in, cfg.seed
            )
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        self.steps = steps_per_epoch(len(self.data.train), cfg.batch_size)
        self.stages = plan_stages(cfg, self.model)
        self.total_epochs = sum(stage.epochs for stage in self.stages)
        self.scaler = self.precision.make_scaler()
        self.ema = ModelEMA(self.model, cfg.ema) if cfg.ema else None
        # pulls every 5 steps, or every epoch's last step when epochs are shorter
        self.lookahead = (
            Lookahead(cfg.lookahead, every=min(5, self.steps)) if cfg.lookahead else None
        )
        augmentation = cfg.augmentation()
        self.augment = (
            None
            if augmentation.is_identity()
            else BatchAugment(augmentation, len(self.data.classes))
        )
        self.alternating_flip = augmentation.alternating_flip
        self._flips: tuple[int, torch.Tensor] | None = None  # (epoch, alternating_flips)
        self.early: EarlyStopping | None = None  # set on entering the last stage
        self.stopped_early = False
        self.stage_index = -1
        self.features: dict[str, ImageSet | None] | None = None  # cached backbone outputs
        self.epoch = 0  # epochs fully done, over all stages
        self.progress = EpochProgress()
        self.history: list[dict[str, Any]] = []
        self.best_accuracy = -1.0
        self.best_epoch = 0
        self.wall_seconds = 0.0
        self.stop = StopFlag()
        self._compiled: dict[int, nn.Module] = {}  # --compile: module id -> compiled module

    # ---- stages --------------------------------------------------------------------------------
    def enter_stage(self, index: int) -> None:
        """Freeze/unfreeze for the stage; a fresh optimiser and schedule for its epochs."""
        stage = self.stages[index]
        self.stage_index = index
        groups = apply_stage(self.model, stage)
        self.optimizer = build_optimizer(groups, self.cfg)
        self.scheduler = build_scheduler(self.optimizer, self.cfg, self.steps, stage.epochs)
        if self.cfg.patience and index == len(self.stages) - 1:
            # counted in the last stage only: a plateau of the head must not skip fine-tuning
            self.early = EarlyStopping(self.cfg.patience)
        self.features = None
        if can_cache_features(self.model, stage, len(self.data.train), self.augment is not None):
            started = time.perf_counter()
            sets = {"train": self.data.train, "val": self.data.val}
            self.features = {
                name: backbone_features(self.model, s, self.images_in, self.precision)
                if s is not None
                else None
                for name, s in sets.items()
            }
            print(
                f"cnnkit: backbone frozen; features of {len(self.data.train)} training images "
                f"cached in {time.perf_counter() - started:.1f}s"
            )

    def _trained_part(
        self, split: str, averaged: bool = False
    ) -> tuple[nn.Module, ImageSet | None, Prepare]:
        """What trains (or, averaged, what is evaluated: the EMA when on) and on what: the head
        on cached features, or the whole model on images."""
        model = self.ema.module if averaged and self.ema is not None else self.model
        if self.features is not None:
            return self._maybe_compiled(model.head), self.features[split], feature_input
        return self._maybe_compiled(model), getattr(self.data, split), self.images_in

    def _maybe_compiled(self, module: nn.Module) -> nn.Module:
        """With --compile, the module's torch.compile wrapper (made once, sharing its weights;
        checkpoints store the plain module's state)."""
        if not self.cfg.compile:
            return module
        if id(module) not in self._compiled:
            # static shapes: the short last batch gets its own graph instead of making every
            # batch go through a dynamic-shape one
            self._compiled[id(module)] = torch.compile(module, dynamic=False)
        return self._compiled[id(module)]

    def _augment_step(
        self, images: torch.Tensor, labels: torch.Tensor, step: int, indices: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment one training batch with randomness seeded by (seed, epoch, step), so a
        resumed epoch draws the same augmentations as an uninterrupted one; an alternating
        flip mirrors the images this epoch's seeded choice names."""
        generator = augment_generator(self.cfg.seed, self.epoch, step)
        flip = None
        if self.alternating_flip:
            if self._flips is None or self._flips[0] != self.epoch:
                self._flips = (
                    self.epoch,
                    alternating_flips(len(self.data.train), self.cfg.seed, self.epoch),
                )
            flip = self._flips[1][indices]
        return self.augment(images, labels, generator, flip)

    def _after_step(self, bar: EpochBar | None) -> Callable[[EpochProgress], None]:
        def after_step(progress: EpochProgress) -> None:
            if self.lookahead is not None:
                step = self.epoch * self.steps + progress.step
                self.lookahead.step(self.model, step, self.total_epochs * self.steps)
            if self.ema is not None:
                self.ema.update(self.model)
            if bar is not None:
                bar.update(progress)

        return after_step

    # ---- checkpoints -------------------------------------------------------------------------
    def checkpoint_fields(self, averaged: bool = False) -> dict[str, Any]:
        """The checkpoint's contract fields; `averaged`: the EMA weights (what best.pt holds)."""
        source = self.ema.module if averaged and self.ema is not None else self.model
        return {
            "model": self.spec.to_dict(),
            "num_classes": len(self.data.classes),
            "state_dict": unwrap_model(source).state_dict(),
            "classes": list(self.data.classes),
            "preprocessing": self.preprocessing.to_dict(),
            "config": self.cfg.to_dict(),
            "data_location": self.data_location,
            "epoch": self.epoch,
            "metrics": {"best_val_accuracy": self.best_accuracy, "best_epoch": self.best_epoch},
        }

    def save_last(self) -> None:
        save_checkpoint(
            self.run_dir / "last.pt",
            **self.checkpoint_fields(),
            stage=self.stage_index,
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            scaler=self.scaler.state_dict(),
            rng=_rng_state(),
            generator=self.generator.get_state(),
            progress=self.progress.to_dict(),
            history=self.history,
            best=[self.best_accuracy, self.best_epoch],
            wall_seconds=self.wall_seconds,
            init_seconds=self.init_seconds,
            ema=self.ema.state_dict() if self.ema is not None else None,
            lookahead=self.lookahead.state_dict() if self.lookahead is not None else None,
            early_stopping=self.early.state_dict() if self.early is not None else None,
            stopped_early=self.stopped_early,
        )

    def restore(self, ckpt: dict[str, Any]) -> None:
        """Continue exactly where last.pt stopped: weights, stage, optimiser, schedule, RNG."""
        unwrap_model(self.model).load_state_dict(ckpt["state_dict"])
        self.enter_stage(ckpt.get("stage", 0))
        saved = ckpt["optimizer"]
        for group in saved["param_groups"]:  # the update implementation is this run's choice,
            for key in ("fused", "foreach"):  # not the saved one (which may predate it); set
                if key in self.optimizer.defaults:  # before loading, which places state by it
                    group[key] = self.optimizer.defaults[key]
        self.optimizer.load_state_dict(saved)
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        _set_rng_state(ckpt["rng"])
        self.generator.set_state(ckpt["generator"])
        self.progress = EpochProgress(**ckpt["progress"])
        self.history = list(ckpt["history"])
        self.best_accuracy, self.best_epoch = ckpt["best"]
        self.epoch = ckpt["epoch"]
        self.wall_seconds = ckpt.get("wall_seconds", 0.0)
        self.init_seconds = ckpt.get("init_seconds", 0.0)
        if self.ema is not None:
            if ckpt.get("ema"):
                self.ema.load_state_dict(ckpt["ema"])
            else:  # EMA switched on at resume: start averaging from the restored weights
                self.ema = ModelEMA(self.model, self.cfg.ema)
        if self.lookahead is not None:  # not started yet (or switched on at resume): None/{}
            self.lookahead.load_state_dict(ckpt.get("lookahead") or {}, self.model)
        if self.early is not None and ckpt.get("early_stopping"):
            self.early.load_state_dict(ckpt["early_stopping"])

    # ---- the run -------------------------------------------------------------------------------
    def fit(self) -> RunResult:
        run_folder.write_run_files(self.run_dir, self.cfg.to_dict(), list(self.data.classes))
        writer = self._tensorboard()
        self._announce()
        with self.stop.installed():
            try:
                interrupted = self._epochs(writer)
            except Exception as exc:
                error = _compile_error(exc) if self.cfg.compile else None
                if error is None:
                    raise
                raise error from exc
        if writer is not None:
            writer.close()
        metrics = self._final_metrics(interrupted)
        return RunResult(self.run_dir, metrics, self.history, interrupted, self.stop.signum)

    def _epochs(self, writer: Any) -> bool:
        """Train the remaining epochs; True when Ctrl-C interrupted them (last.pt is saved)."""
        while self.epoch < self.total_epochs:
            started = time.perf_counter()
            index, _, _ = stage_at(self.stages, self.epoch)
            if index != self.stage_index:
                self.enter_stage(index)
            # after enter_stage, whose optimiser takes what trains at the stage's start
            start_epoch(self.model, self.epoch)
            model, data, prepare = self._trained_part("train")
            bar = self._bar()
            ctx = StepContext(
                prepare,
                self.optimizer,
                self.scheduler,
                self.scaler,
                self.precision,
                self.loss_fn,
                self.cfg.clip_grad,
                self._augment_step if self.augment is not None else None,
            )
            train_one_epoch(
                model,
                data,
                ctx,
                self.cfg.batch_size,
                self.generator,
                self.progress,
                should_stop=self.stop,
                on_step=self._after_step(bar),
            )
            if bar:
                bar.close()
            self.wall_seconds += time.perf_counter() - started
            if self.stop.requested:
                self.save_last()
                return True
            self._end_epoch(writer)
            if self.stopped_early:
                break
        return False

    def _end_epoch(self, writer: Any) -> None:
        started = time.perf_counter()
        if self.lookahead is not None:  # evaluate and save the slow weights
            self.lookahead.sync(self.model)
        p = self.progress
        self.epoch += 1
        row: dict[str, Any] = {
            "epoch": self.epoch,
            "stage": self.stages[self.stage_index].name,
            "train_loss": p.loss,
            "train_accuracy": p.accuracy,
            "val_loss": None,
            "val_accuracy": None,
            "lr": self.optimizer.param_groups[-1]["lr"],
            "seconds": p.seconds,
            "images_per_second": p.images_per_second,
        }
        score = p.accuracy
        model, val, prepare = self._trained_part("val", averaged=True)
        if val is not None and len(val):
            row["val_loss"], row["val_accuracy"] = evaluate_epoch(
                model, val, prepare, self.precision, self.loss_fn
            )
            score = row["val_accuracy"]
        self.history.append(row)
        self.progress = EpochProgress()
        if score > self.best_accuracy:
            self.best_accuracy, self.best_epoch = score, self.epoch
            save_checkpoint(self.run_dir / "best.pt", **self.checkpoint_fields(averaged=True))
        if self.early is not None and self.early.step(score):
            self.stopped_early = True
        self.wall_seconds += time.perf_counter() - started
        self.save_last()
        run_folder.write_history(self.run_dir, self.history)
        labels = {"test": "validation (the test split)", "split": "validation (held out)"}
        val_label = labels.get(self.data.val_source, "validation")
        run_folder.plot_history(self.run_dir, self.history, self.best_epoch, val_label)
        if writer is not None:
            for key, value in row.items():
                if isinstance(value, float):
                    writer.add_scalar(key, value, self.epoch)
            writer.flush()
        self._print_epoch(row)
        if self.stopped_early:
            print(
                f"early stopping: no improvement for {self.cfg.patience} epochs; best.pt holds "
                f"epoch {self.best_epoch}"
            )

    def _final_metrics(self, interrupted: bool) -> dict[str, Any]:
        metrics: dict[str, Any] = {
            "epochs_done": self.epoch,
            "epochs": self.total_epochs,
            "stages": [stage.name for stage in self.stages],
            "interrupted": interrupted,
            "stopped_early": self.stopped_early,
            "ema": self.cfg.ema or None,
            "lookahead": self.cfg.lookahead or None,
            "best_epoch": self.best_epoch,
            "best_val_accuracy": self.best_accuracy if self.data.val is not None else None,
            "validation": self.data.val_source,
            "wall_seconds": round(self.wall_seconds, 2),
            "device": str(self.device),
            "precision": self.precision.name,
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "skipped_images": len(self.data.skipped),
        }
        if self.history:
            metrics["final"] = self.history[-1]
        # airbench's clock: the data-dependent init, the training steps and the final test
        # evaluation; not data loading, per-epoch validation, checkpoints or plots
        timing = {
            "init": round(self.init_seconds, 3),
            "training": round(sum(row["seconds"] for row in self.history), 3),
        }
        test = self.data.test
        if not interrupted and test is not None and len(test) and self.epoch:
            best = load_checkpoint(self.run_dir / "best.pt")
            unwrap_model(self.model).load_state_dict(best["state_dict"])
            started = time.perf_counter()
            # one pass gives both: the plain logits are TTA's identity view
            tta, plain = tta_and_plain_logits(
                self.model, test.images, self.images_in, self.precision, mode=self.cfg.tta
            )
            timing["test_evaluation"] = round(time.perf_counter() - started, 3)
            loss = float(self.loss_fn(plain, test.labels))
            acc = float((plain.argmax(1) == test.labels).float().mean())
            metrics.update(test_loss=loss, test_accuracy=acc, test_images=len(test))
            # validated on the test split itself (val_split 0, as airbench): best.pt was chosen
            # on these images, so say so rather than pass the figure off as unseen data's
            chosen = ", chosen on this split" if self.data.val_source == "test" else ""
            print(
                f"test accuracy (best.pt, epoch {self.best_epoch}{chosen}): {acc:.2%}  "
                f"loss {loss:.4f}"
            )
            if self.cfg.tta != "none":
                tta_acc = float((tta.argmax(1) == test.labels).float().mean())
                metrics.update(tta=self.cfg.tta, test_accuracy_tta=tta_acc)
                print(
                    f"test accuracy with TTA ({self.cfg.tta}): {tta_acc:.2%} "
                    f"({(tta_acc - acc) * 100:+.2f} points)"
                )
        elif not interrupted and self.epoch:
            if self.data.val_source in ("split", "folder"):
                then = (
                    f"`cnnkit evaluate {self.run_dir}` evaluates best.pt on its validation images"
                )
            else:
                then = "it trained on all of it: evaluate with --data on images it has not seen"
            print(f"no test split in {self.cfg.data}: no final test evaluation; {then}")
        metrics["timing"] = {**timing, "timed": round(sum(timing.values()), 3)}
        run_folder.write_metrics(self.run_dir, metrics)
        if not interrupted:
            epochs = f"{self.epoch} epoch{'s' if self.epoch != 1 else ''}"
            print(f"training took {self.wall_seconds:.1f}s over {epochs}")
        return metrics

    # ---- output --------------------------------------------------------------------------------
    def _announce(self) -> None:
        d = self.data
        n_params = sum(p.numel() for p in self.model.parameters())
        val = f"{len(d.val)} val ({d.val_source})" if d.val is not None else "no validation"
        test = f", {len(d.test)} test" if d.test is not None else ""
        stages = " then ".join(f"{s.name} {s.epochs} epochs" for s in self.stages)
        print(
            f"cnnkit: {self.spec.name} ({n_params:,} params) on {d.name}: {len(d.train)} train, "
            f"{val}{test}, {len(d.classes)} classes; {self.device} {self.precision.name}; "
            f"{stages}; run folder {self.run_dir}"
        )
        print(f"cnnkit: {self._recipe()}")

    def _recipe(self) -> str:
        """The optimiser, augmentation and regularisation in effect, in one line."""
        c = self.cfg
        rate = f"lr {c.lr:g}" + (f", filters {c.muon_lr:g}" if c.optimizer == "muon" else "")
        extras = {
            "weight decay": c.weight_decay,
            "label smoothing": c.label_smoothing,
            "dropout": c.dropout,
            "ema": c.ema,
            "lookahead": c.lookahead,
            "clip grad": c.clip_grad,
            "patience": c.patience,
        }
        regular = ", ".join(f"{k} {v:g}" for k, v in extras.items() if v) or "none"
        tta = f"; tta {c.tta}" if c.tta != "none" else ""
        return (
            f"{c.optimizer} {rate} ({c.schedule}), batch {c.batch_size}; augment: "
            f"{c.augmentation().describe()}; regularisation: {regular}{tta}"
        )

    def _print_epoch(self, row: dict[str, Any]) -> None:
        val = ""
        if row["val_accuracy"] is not None:
            val = f"  val loss {row['val_loss']:.4f} acc {row['val_accuracy']:.2%}"
        stage = f" [{row['stage']}]" if len(self.stages) > 1 else ""
        print(
            f"epoch {row['epoch']}/{self.total_epochs}{stage}  train loss {row['train_loss']:.4f} "
            f"acc {row['train_accuracy']:.2%}{val}  {row['images_per_second']:,.0f} img/s  "
            f"{row['seconds']:.1f}s",
            flush=True,
        )

    def _bar(self) -> EpochBar | None:
        if not self.show_progress:
            return None
        desc = f"epoch {self.epoch + 1}/{self.total_epochs}"
        return EpochBar(self.steps, self.progress.step, desc)

    def _tensorboard(self) -> Any:
        if not self.cfg.tensorboard:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise CnnkitError("--tensorboard needs tensorboard: pip install tensorboard") from None
        return SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))


def _compile_error(exc: Exception) -> CnnkitError | None:
    """A torch.compile failure (no C++ compiler, an unsupported op) as one line; None for any
    other error."""
    from torch._dynamo.exc import BackendCompilerFailed, TorchDynamoException

    if isinstance(exc, (BackendCompilerFailed, TorchDynamoException)):
        cause = getattr(exc, "inner_exception", None) or exc  # older torch wraps the cause
        text = str(cause).strip()
        first = text.splitlines()[0] if text else type(cause).__name__
        return CnnkitError(f"--compile failed ({first[:200]}); train without --compile")
    return None


def _resume(run: str | Path, progress: bool, overrides: dict[str, Any]) -> RunResult:
    run_dir = Path(run)
    last = run_dir / "last.pt" if run_dir.is_dir() else run_dir
    if not last.is_file():
        raise CnnkitError(f"nothing to resume: {last} not found")
    ckpt = load_checkpoint(last)
    if "optimizer" not in ckpt:
        raise CnnkitError(f"{last} holds weights only and cannot be resumed")
    if ckpt.get("stopped_early"):
        raise CnnkitError(
            f"run {last.parent} stopped early at epoch {ckpt['epoch']}; its best.pt is final"
        )
    values = with_overrides(ckpt["config"], overrides)
    trainer = Trainer(TrainConfig.from_dict(values), last.parent, progress, resuming=True)
    if list(trainer.data.classes) != list(ckpt["classes"]):
        raise CnnkitError("the data's classes differ from the checkpoint's; cannot resume")
    trainer.restore(ckpt)
    if trainer.epoch >= trainer.total_epochs:
        raise CnnkitError(
            f"run {last.parent} already finished {trainer.epoch} epochs; "
            "pass a larger --epochs to train further"
        )
    print(
        f"cnnkit: resuming {last.parent} at epoch {trainer.epoch + 1}, "
        f"batch {trainer.progress.step}"
    )
    return trainer.fit()


def train(
    config: TrainConfig | None = None,
    *,
    resume: str | Path | None = None,
    progress: bool = True,
    **overrides: Any,
) -> RunResult:
    """Train a model into a run folder; `resume` continues a run folder from its last.pt.

    `cnnkit.train(data="cifar10-sample", model="simple_cnn", epochs=2)` takes the same options as
    `cnnkit train`, as keywords or as a TrainConfig.
    """
    if resume is not None:
        return _resume(resume, progress, overrides)
    if config is None:
        config = TrainConfig.from_dict(overrides)
    elif overrides:
        config = TrainConfig.from_dict(with_overrides(config.to_dict(), overrides))
    short = config.model if len(config.model) < 40 and "," not in config.model else "custom"
    run_dir = run_folder.new_run_dir(config.project, config.name, Path(short).stem)
    try:
        trainer = Trainer(config, run_dir, progress)
    except BaseException:
        if run_dir.exists() and not any(run_dir.iterdir()):
            run_dir.rmdir()  # a run that never started leaves no empty folder
        raise
    return trainer.fit()
