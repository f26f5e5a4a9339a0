"""Embedding training as a task: identity folders in, unit vectors out, a margin loss
(ArcFace / CosFace) over the training identities; best.pt is picked by verification accuracy
on pairs of people the run never trains on (an open set, as face recognition meets it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.config import TrainConfig
from cnnkit.data import DataSplits, ImageSet, load_data
from cnnkit.engine.checkpoint import unwrap_model
from cnnkit.engine.device import Precision
from cnnkit.engine.loop import EpochProgress, StepOutput
from cnnkit.engine.stages import Stage
from cnnkit.errors import CnnkitError
from cnnkit.tasks.base import Metrics
from cnnkit.tasks.classify.loop import predict_logits, shuffled_batches
from cnnkit.tasks.classify.task import ClassifyTask, build_model_for, classify_resize
from cnnkit.tasks.embed.margin import MarginHead
from cnnkit.tasks.embed.model import embedding_model
from cnnkit.tasks.embed.pairs import (
    Pairs,
    best_threshold,
    roc_auc,
    sample_pairs,
    ten_fold_accuracy,
)

DEFAULT_DIM = 512
DEFAULT_SCALE = 30.0
ALIGNED_MARKER = "cnnkit-faces.json"  # written by `cnnkit faces align` into its output folder
MAX_PAIRS = 6000  # validation pairs: half of one person (all, when fewer), half of two


def aligned_faces(data: str) -> dict[str, Any] | None:
    """How `cnnkit faces align` made this folder (detector and crop size), or None."""
    marker = Path(data) / ALIGNED_MARKER
    if not marker.is_file():
        return None
    try:
        info = json.loads(marker.read_text(encoding="utf-8"))
        return {"detector": str(info["detector"]), "size": int(info["size"])}
    except (OSError, ValueError, KeyError, TypeError):
        raise CnnkitError(f"{marker} is not a cnnkit faces-align record; remove it") from None


def hold_out_people(
    train: ImageSet, fraction: float, seed: int
) -> tuple[ImageSet, ImageSet | None]:
    """(training set relabelled over the people left, validation set of held-out people):
    a seeded ``fraction`` of the people with two or more images (at least 2 of them) is held
    out whole, so validation pairs show people the model never trained on."""
    counts = torch.bincount(train.labels, minlength=len(train.classes))
    eligible = torch.nonzero(counts >= 2).flatten().numpy()
    n_val = max(2, round(fraction * len(train.classes))) if fraction > 0 else 0
    if n_val == 0 or len(train.classes) - n_val < 2 or len(eligible) < n_val:
        return train, None
    rng = np.random.default_rng(seed)
    held = set(rng.choice(eligible, n_val, replace=False).tolist())
    labels = train.labels.numpy()
    val_idx = np.flatnonzero(np.isin(labels, list(held)))
    tr_idx = np.flatnonzero(~np.isin(labels, list(held)))
    kept = [c for i, c in enumerate(train.classes) if i not in held]
    remap = torch.full((len(train.classes),), -1, dtype=torch.int64)
    remap[[i for i in range(len(train.classes)) if i not in held]] = torch.arange(len(kept))
    tr = train.subset(tr_idx)
    tr = ImageSet(tr.images, remap[tr.labels], kept, tr.paths)
    return tr, train.subset(val_idx)


def identity_splits(cfg: TrainConfig, progress: bool = False) -> DataSplits:
    """The data as an embedding run splits it: a val folder of its own, or held-out people."""
    data = load_data(
        cfg.data,
        data_root=cfg.data_root,
        val_split=0.0,
        seed=cfg.seed,
        image_size=cfg.image_size,
        resize=classify_resize(cfg),
        progress=progress,
    )
    if data.train is None or len(data.train) == 0:
        raise CnnkitError(f"no training images in {cfg.data}")
    if data.train.multilabel:
        raise CnnkitError(
            f"{cfg.data} is multi-label; an embedding model trains on one identity per image "
            "(a folder per person)"
        )
    if data.val_source != "folder":
        data.train, data.val = hold_out_people(data.train, cfg.val_split, cfg.seed)
        data.val_source = "people" if data.val is not None else "none"
        data.classes = list(data.train.classes)
    return data


def embed_images(
    model: nn.Module, images: torch.Tensor, prepare: Any, precision: Precision
) -> torch.Tensor:
    """(N, D) unit embeddings, float32 on the CPU: each image's and its mirror image's
    embeddings summed, as face verification's evaluations do (a face and its mirror are one
    person; the sum is steadier than either)."""
    with torch.no_grad():
        plain = predict_logits(model, images, prepare, precision)
        mirrored = predict_logits(model, images.flip(-1), prepare, precision)
        return F.normalize(plain + mirrored, dim=1)


def pair_scores(embeddings: torch.Tensor, pairs: Pairs) -> np.ndarray:
    """Cosine similarity of each pair."""
    a = embeddings[torch.as_tensor(pairs.first)]
    b = embeddings[torch.as_tensor(pairs.second)]
    return (a * b).sum(1).numpy()


class EmbedTask(ClassifyTask):
    """Face (or any identity) embeddings with an additive-margin loss."""

    name = "embed"
    score_name = "pair_accuracy"
    metric_names = ("pair_accuracy", "auc", "threshold")
    plan_data = None  # identities load in memory: no streaming choice to share

    def __init__(
        self, cfg: TrainConfig, device: torch.device, precision: Precision, channels_last: bool
    ) -> None:
        super().__init__(cfg, device, precision, channels_last)
        if self.augmentation.soft_targets:
            raise CnnkitError("mixup and cutmix blend identities: a margin loss needs whole ones")
        self.dim = cfg.embedding_dim or DEFAULT_DIM
        self.threshold: float | None = None  # chosen on the latest validation pairs
        self.align = aligned_faces(cfg.data) if Path(cfg.data).is_dir() else None
        self._pairs: dict[str, Pairs] = {}

    def load_data(self, progress: bool) -> None:
        self.data = identity_splits(self.cfg, progress)
        if len(self.data.classes) < 2:
            raise CnnkitError(f"{self.cfg.data} needs at least 2 people (folders) to train on")
        if not self.augmentation.is_identity():
            from cnnkit.data.augment import BatchAugment

            self.augment = BatchAugment(self.augmentation, len(self.data.classes))
        self._balance(self.data.train.labels, len(self.data.classes))
        val = self.data.val
        if val is None or not (torch.bincount(val.labels) >= 2).any():
            print(
                "cnnkit: no validation person has two images: no same-person pair to choose "
                "the verification threshold on (`faces verify` will need --threshold); give "
                "people several photos each"
            )

    def build(self, resuming: bool) -> nn.Module:
        cfg = self.cfg
        net, self.spec, self.preprocessing = build_model_for(cfg, self.data.train, self.dim)
        margin = MarginHead(
            self.dim,
            len(self.data.classes),
            cfg.margin_loss or "arcface",
            cfg.margin,
            cfg.margin_scale or DEFAULT_SCALE,
        )
        self.margin_settings = {"kind": margin.kind, "margin": margin.margin, "scale": margin.scale}
        from cnnkit.tasks.classify.loop import image_input
        from cnnkit.tasks.classify.task import init_from_data

        memory_format = torch.channels_last if self.channels_last else torch.preserve_format
        model = embedding_model(net, self.dim, margin).to(self.device, memory_format=memory_format)
        self.images_in = image_input(self.preprocessing, self.channels_last)
        if not resuming:
            self.init_seconds = init_from_data(net, self.data.train, self.images_in, cfg.seed)
        return model

    def enter_stage(self, model: nn.Module, stage: Stage) -> None:
        self.features = None  # the margin head needs the embedding layer: no feature cache

    def trained_module(self, model: nn.Module) -> nn.Module:
        return model

    def epoch(self, module: nn.Module, epoch: int, progress: EpochProgress):
        augment = self._augment_step(epoch)
        prepare, precision = self.images_in, self.precision
        margin = unwrap_model(module).margin  # (DDP wraps the model under torchrun)

        def step(batch: tuple[torch.Tensor, ...]) -> StepOutput:
            images, labels, indices = batch
            if augment is not None:
                images, _ = augment(images, labels, progress.step, indices)
            with precision.autocast():
                embeddings = module(prepare(images))
                loss = F.cross_entropy(margin(embeddings, labels), labels)
            correct = (margin.cosine(embeddings.detach()).argmax(1) == labels).sum()
            return StepOutput({"loss": loss}, labels.numel(), {"accuracy": correct})

        module.train()
        return step, shuffled_batches(
            self.data.train, self.cfg.batch_size, self.device, self.sample_weights
        )

    # ---- evaluation ----------------------------------------------------------------------------
    def _verify(self, module: nn.Module, data: ImageSet, split: str) -> tuple[np.ndarray, Pairs]:
        if split not in self._pairs:
            self._pairs[split] = sample_pairs(data.labels.numpy(), MAX_PAIRS, self.cfg.seed)
        pairs = self._pairs[split]
        embeddings = embed_images(module, data.images, self.images_in, self.precision)
        return pair_scores(embeddings, pairs), pairs

    def evaluate(self, module: nn.Module, split: str) -> Metrics | None:
        data = getattr(self.data, split)
        if data is None or len(data) < 2:
            return None
        try:
            scores, pairs = self._verify(module, data, split)
        except CnnkitError:
            return None  # no two images of one person: nothing to verify
        threshold, accuracy = best_threshold(scores, pairs.same)
        if split == "val":
            self.threshold = threshold
        values = {"pair_accuracy": accuracy, "auc": roc_auc(scores, pairs.same)}
        return Metrics({**values, "threshold": threshold}, self.score_name)

    def test(self, model: nn.Module, best_epoch: int) -> dict[str, Any]:
        """best.pt's verification on pairs of the test split's people: LFW's 10-fold accuracy,
        and the accuracy at the threshold that validation chose (what predict uses)."""
        try:
            scores, pairs = self._verify(model, self.data.test, "test")
        except CnnkitError as exc:
            print(f"cnnkit: no test verification: {exc}")
            return {}
        mean, std = ten_fold_accuracy(scores, pairs.same, seed=self.cfg.seed)
        fields: dict[str, Any] = {
            "test_pair_accuracy": mean,
            "test_pair_accuracy_std": std,
            "test_auc": roc_auc(scores, pairs.same),
            "test_pairs": len(pairs),
        }
        print(
            f"test verification (best.pt, epoch {best_epoch}, {len(pairs)} pairs): "
            f"{mean:.2%} +- {std:.2%} (10 folds)  AUC {fields['test_auc']:.4f}"
        )
        if self.threshold is not None:
            at = float(np.mean((scores > self.threshold) == pairs.same))
            fields.update(test_accuracy_at_threshold=at, threshold=self.threshold)
            print(f"test accuracy at the validation threshold {self.threshold:.3f}: {at:.2%}")
        return fields

    # ---- checkpoint and console ----------------------------------------------------------------
    def checkpoint_fields(self) -> dict[str, Any]:
        return {
            "model": self.spec.to_dict(),
            "embedding_dim": self.dim,
            "num_classes": len(self.data.classes),
            "classes": list(self.data.classes),
            "preprocessing": self.preprocessing.to_dict(),
            "decode_size": list(self.data.train.size),  # (H, W) images were decoded at
            "threshold": self.threshold,
            "margin": self.margin_settings,
            "face_align": self.align,
        }

    def describe_recipe(self) -> tuple[str, str]:
        before, after = super().describe_recipe()
        m = self.margin_settings
        aligned = f"; faces aligned ({self.align['detector']})" if self.align else ""
        return before, (
            f"{after}; {m['kind']} margin {m['margin']:g} scale {m['scale']:g}, "
            f"{self.dim}-d embeddings{aligned}"
        )
