"""Image generation as a task: a GAN whose discriminator and generator update in turn within
each step (two named optimisations), judged by fd_lite0 (lower is better) on validation images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cnnkit.config import TrainConfig
from cnnkit.data import load_data
from cnnkit.data.augment import augment_generator
from cnnkit.data.preprocess import Preprocessing
from cnnkit.engine.device import Precision
from cnnkit.engine.loop import EpochProgress, StepOutput, Update
from cnnkit.engine.stages import Stage
from cnnkit.errors import CnnkitError
from cnnkit.tasks.base import Metrics
from cnnkit.tasks.generate.distance import distances, features, standard_fid_status
from cnnkit.tasks.generate.losses import discriminator_loss, generator_loss
from cnnkit.tasks.generate.names import is_gan_layers
from cnnkit.tasks.generate.networks import GAN, GANSpec, gan_spec
from cnnkit.tasks.generate.sample import (
    class_cycle,
    generate_images,
    noise,
    save_grid,
    to_model_range,
)

# options of the classification recipe a GAN cannot use, refused in one line
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
    "rotation": None,
    "color_jitter": None,
    "input_size": None,
    "head": None,
    "dropout": 0.0,
    "weights": None,
    "finetune": False,
    "freeze": False,
    "unfreeze": None,
    "lookahead": 0.0,
    "compile": False,
}
METRIC_NAMES = ("fd_lite0", "kid_lite0")
DEFAULT_IMAGE_SIZE = 32
DEFAULT_FD_IMAGES = 1000
ADAM_BETAS = (0.5, 0.999)  # DCGAN's: beta1 0.5 keeps the adversarial game stable
GRID_ROWS = 8


def check_generate_config(cfg: TrainConfig) -> None:
    """Refuse, in one line, the options that mean nothing for a GAN."""
    for key, neutral in UNSUPPORTED.items():
        value = getattr(cfg, key)
        if value not in (neutral, None, 0, 0.0, False):
            raise CnnkitError(f"--{key.replace('_', '-')} is not available for GANs")
    if cfg.starts_pretrained:
        raise CnnkitError("GANs train from scratch: --pretrained is not available for them")
    if cfg.augment != "none":
        raise CnnkitError("GANs take --flip only, not an --augment preset")
    if cfg.tta != "none":
        raise CnnkitError("--tta is for classifiers, not GANs")
    if cfg.resize not in (None, "stretch"):
        raise CnnkitError(f"a GAN's images are stretched to a square, not '{cfg.resize}'")


class GenerateTask:
    """A GAN: fixed-noise grids every epoch, best.pt by the validation fd_lite0."""

    name = "generate"
    score_name = "fd_lite0"
    metric_names = METRIC_NAMES

    def __init__(
        self, cfg: TrainConfig, device: torch.device, precision: Precision, channels_last: bool
    ) -> None:
        check_generate_config(cfg)
        self.cfg = cfg
        self.device = device
        self.precision = precision
        self.init_seconds = 0.0
        self.size = int(cfg.image_size or DEFAULT_IMAGE_SIZE)
        self.fd_images = int(cfg.fd_images or DEFAULT_FD_IMAGES)
        self.spec: GANSpec
        self.layered = is_gan_layers(cfg.model)
        if self.layered:  # its shapes are checked before any data is read
            self.spec = gan_spec(cfg, self.size, 0)
        self._real: dict[str, tuple[np.ndarray, torch.Tensor]] = {}  # split -> features, labels
        self.data: Any

    # ---- data and model ------------------------------------------------------------------------
    def load_data(self, progress: bool) -> None:
        cfg = self.cfg
        self.data = load_data(
            cfg.data,
            data_root=cfg.data_root,
            val_split=cfg.val_split,
            seed=cfg.seed,
            image_size=self.size,
            resize="stretch",
            progress=progress,
        )
        if self.data.train is None or len(self.data.train) == 0:
            raise CnnkitError(f"no training images in {cfg.data}")
        if not self.layered:
            self.spec = gan_spec(cfg, self.size, len(self.data.classes))
        if self.spec.conditional and len(self.data.classes) < 2:
            raise CnnkitError("dcgan_conditional needs at least 2 classes (class folders)")

    def build(self, resuming: bool) -> nn.Module:
        return GAN(self.spec).to(self.device)

    def steps_per_epoch(self) -> int:
        # full batches only: a last batch of one image would give BatchNorm nothing to normalise
        return max(1, len(self.data.train) // self.cfg.batch_size)

    def enter_stage(self, model: nn.Module, stage: Stage) -> None:
        pass

    def trained_module(self, model: nn.Module) -> nn.Module:
        return model

    def optimizer_groups(self, model: nn.Module, stage: Stage) -> dict[str, list[dict]]:
        """Two optimisations, the discriminator's updated first in each step."""
        extra = {"betas": ADAM_BETAS} if self.cfg.optimizer in ("adam", "adamw") else {}
        return {
            "D": [{"params": list(model.discriminator.parameters()), "lr": stage.lr, **extra}],
            "G": [{"params": list(model.generator.parameters()), "lr": stage.lr, **extra}],
        }

    # ---- training ------------------------------------------------------------------------------
    def epoch(self, module: nn.Module, epoch: int, progress: EpochProgress):
        train, cfg = self.data.train, self.cfg
        batch_size = min(cfg.batch_size, len(train))
        steps = self.steps_per_epoch()
        generator_net, discriminator = module.generator, module.discriminator
        conditional = self.spec.conditional

        def make_batches(shuffle: torch.Generator):
            order = torch.randperm(len(train), generator=shuffle)
            for i in range(steps):
                yield order[i * batch_size : (i + 1) * batch_size]

        def step(indices: torch.Tensor, update: Update) -> StepOutput:
            # noise and flips seeded by (seed, epoch, step): a resumed epoch replays the same
            draws = augment_generator(cfg.seed, epoch, progress.step)
            z = torch.randn(len(indices), self.spec.latent_dim, generator=draws).to(self.device)
            real = to_model_range(train.images[indices]).to(self.device)  # (B, 3, S, S)
            if cfg.flip:
                mirrored = (torch.rand(len(indices), generator=draws) < 0.5).to(self.device)
                real = torch.where(mirrored[:, None, None, None], real.flip(3), real)
            labels = train.labels[indices].to(self.device) if conditional else None
            with self.precision.autocast():
                fake = generator_net(z, labels)
                real_logits = discriminator(real, labels)
                fake_logits = discriminator(fake.detach(), labels)
            d_loss = discriminator_loss(real_logits.float(), fake_logits.float(), cfg.gan_loss)
            update("D", d_loss)
            discriminator.requires_grad_(False)  # the generator's step needs no D gradients
            try:
                with self.precision.autocast():
                    judged = discriminator(fake, labels)
                g_loss = generator_loss(judged.float(), cfg.gan_loss)
                update("G", g_loss)
            finally:
                discriminator.requires_grad_(True)
            return StepOutput({"d_loss": d_loss.detach(), "g_loss": g_loss.detach()}, len(indices))

        module.train()
        return step, make_batches

    # ---- evaluation ----------------------------------------------------------------------------
    def _real_features(self, split: str, n: int) -> tuple[np.ndarray, torch.Tensor]:
        """Lite0 features of a seeded subset of n real images of the split (computed once)."""
        if split not in self._real:
            data = getattr(self.data, split)
            order = torch.randperm(
                len(data), generator=torch.Generator().manual_seed(self.cfg.seed)
            )
            chosen = order[:n]
            self._real[split] = (features(data.images[chosen]), data.labels[chosen])
        return self._real[split]

    def _generated_features(self, module: nn.Module, labels: torch.Tensor) -> np.ndarray:
        z = noise(len(labels), self.spec.latent_dim, self.cfg.seed + 1)
        images = generate_images(
            module.generator, z, labels if self.spec.conditional else None, self.precision
        )
        return features(images)

    def evaluate(self, module: nn.Module, split: str) -> Metrics | None:
        data = getattr(self.data, split)
        if data is None or len(data) < 2:
            return None
        real, labels = self._real_features(split, min(self.fd_images, len(data)))
        found = distances(self._generated_features(module, labels), real)
        return Metrics(found.named(), self.score_name, higher_is_better=False)

    def test(self, model: nn.Module, best_epoch: int) -> dict[str, Any]:
        test = self.data.test
        n = min(self.fd_images, len(test) // 2)
        if n < 2:
            print(f"test: {len(test)} images are too few for a distance")
            return {}
        order = torch.randperm(len(test), generator=torch.Generator().manual_seed(self.cfg.seed))
        first, second = features(test.images[order[:n]]), features(test.images[order[n : 2 * n]])
        found = distances(self._generated_features(model, test.labels[order[:n]]), first)
        floor = distances(first, second)
        print(
            f"test (best.pt, epoch {best_epoch}, {n} generated vs {n} real): fd_lite0 "
            f"{found.fd:.2f}  kid_lite0 {found.kid:.4f}  (real vs real floor: fd_lite0 "
            f"{floor.fd:.2f}  kid_lite0 {floor.kid:.4f})"
        )
        status = standard_fid_status()
        if status:
            print(f"cnnkit: {status}")
        return {
            **found.named("test_"),
            **floor.named("floor_"),
            "test_images": n,
        }

    def after_epoch(self, module: nn.Module, epoch: int, run_dir: Path) -> None:
        """samples/epoch_NNN.png: the same noise every epoch (a conditional model: one class a
        column)."""
        classes = self.spec.num_classes
        n = GRID_ROWS * (classes or GRID_ROWS)
        z = noise(n, self.spec.latent_dim, self.cfg.seed)
        images = generate_images(module.generator, z, class_cycle(n, classes), self.precision)
        save_grid(images, run_dir / "samples" / f"epoch_{epoch:03d}.png", classes or GRID_ROWS)

    # ---- checkpoint and console ----------------------------------------------------------------
    def checkpoint_fields(self) -> dict[str, Any]:
        return {
            "model": self.spec.to_dict(),
            "num_classes": len(self.data.classes),
            "classes": list(self.data.classes),
            "preprocessing": Preprocessing(
                size=(self.size, self.size), resize="stretch", mean=(0.5,) * 3, std=(0.5,) * 3
            ).to_dict(),
        }

    def model_name(self) -> str:
        return self.spec.name

    def describe_recipe(self) -> tuple[str, str]:
        spec = self.spec
        loss = self.cfg.gan_loss or "bce"
        sn = ", spectral norm" if spec.spectral_norm else ""
        flip = "flip" if self.cfg.flip else "none"
        before = f"augment: {flip}; {self.size} px, noise {spec.latent_dim}"
        return before, f"; loss {loss}{sn}; Adam betas {ADAM_BETAS}; fd on {self.fd_images} images"
