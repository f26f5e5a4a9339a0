"""Generator: a trained GAN from its checkpoint. `generate(n)` gives images, `save` writes a
grid or an image folder, `evaluate` measures fd_lite0 / kid_lite0 against real images beside
the real-vs-real floor."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnkit.engine.device import Precision, resolve_device, resolve_precision
from cnnkit.errors import CnnkitError, did_you_mean
from cnnkit.inputs import output_folder
from cnnkit.tasks.evaluation_data import (
    check_split,
    choose_split,
    classes_in_our_order,
    evaluation_folder,
    split_options,
    trained_on,
)
from cnnkit.tasks.generate.distance import (
    FEATURE_DIMS,
    distances,
    features,
    standard_fid,
    standard_fid_status,
)
from cnnkit.tasks.generate.networks import GAN, GANSpec
from cnnkit.tasks.generate.sample import class_cycle, generate_images, noise, save_folder, save_grid
from cnnkit.tasks.generate.task import DEFAULT_FD_IMAGES

GRID_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass
class GenerationReport:
    """fd_lite0 / kid_lite0 of n generated images against n real ones, and the floor: the same
    figures between two disjoint sets of n real images. `fid` is Inception FID where its
    weights were found locally, else None with the reason in `fid_note`."""

    fd_lite0: float
    kid_lite0: float
    floor_fd_lite0: float
    floor_kid_lite0: float
    n: int
    split: str
    fid: float | None = None
    fid_note: str | None = None
    out_dir: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["out_dir"] = str(self.out_dir) if self.out_dir is not None else None
        return values

    def show(self) -> None:
        print(
            f"{self.n} generated vs {self.n} real {self.split} images: fd_lite0 "
            f"{self.fd_lite0:.2f}  kid_lite0 {self.kid_lite0:.4f}"
        )
        print(
            f"real vs real floor ({self.n} vs {self.n}): fd_lite0 {self.floor_fd_lite0:.2f}  "
            f"kid_lite0 {self.floor_kid_lite0:.4f}"
        )
        print(f"Inception FID: {self.fid:.2f}" if self.fid is not None else self.fid_note)
        if self.n < FEW_IMAGES:
            print(
                f"note: {self.n} images a side are too few for these distances to mean much "
                f"(the features have {FEATURE_DIMS:,} dimensions): compare only figures of the "
                "same n, and prefer 1,000 or more"
            )


FEW_IMAGES = 200  # fewer images a side than this: the distances are mostly their small-n bias


class Generator:
    """A trained GAN's generator, its class names (a conditional one takes them) and sizes."""

    task = "generate"

    def __init__(
        self,
        model: GAN,
        classes: list[str],
        device: str = "auto",
        precision: str = "auto",
        config: dict[str, Any] | None = None,
        path: Path | None = None,
        data_location: str | None = None,
    ) -> None:
        self.device = resolve_device(device)
        self.precision = Precision(self.device, resolve_precision(precision, self.device))
        self.model = model.to(self.device).eval()
        self.spec: GANSpec = model.spec
        self.classes = list(classes)
        self.config = config or {}
        self.path = path
        self.data_location = data_location

    @classmethod
    def from_checkpoint(
        cls, ckpt: dict[str, Any], path: Path, device: str = "auto", precision: str = "auto"
    ) -> Generator:
        spec = GANSpec.from_dict(ckpt["model"])
        model = GAN(spec)
        try:
            model.load_state_dict(ckpt["state_dict"])
        except RuntimeError:
            raise CnnkitError(f"{path}: weights do not fit GAN '{spec.name}'") from None
        config, where = ckpt.get("config", {}), ckpt.get("data_location")
        return cls(model, ckpt["classes"], device, precision, config, path, where)

    @property
    def conditional(self) -> bool:
        return self.spec.conditional

    # ---- generation ----------------------------------------------------------------------------
    def labels_for(self, n: int, class_name: str | None) -> torch.Tensor | None:
        """The class of each image: the one named, else every class in turn (conditional)."""
        if class_name is not None and not self.conditional:
            raise CnnkitError(
                f"{self.spec.name} is not class-conditional: --class needs a dcgan_conditional"
            )
        if not self.conditional:
            return None
        if class_name is None:
            return class_cycle(n, self.spec.num_classes)
        if class_name not in self.classes:
            raise did_you_mean("class", class_name, self.classes)
        return torch.full((n,), self.classes.index(class_name), dtype=torch.int64)

    def generate_tensor(
        self, n: int = 64, class_name: str | None = None, seed: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """uint8 images (n, 3, S, S) and their class indices (None: unconditional)."""
        if not isinstance(n, int) or n < 1:
            raise CnnkitError(f"n must be a positive whole number, got {n!r}")
        labels = self.labels_for(n, class_name)
        seed = secrets.randbits(62) if seed is None else int(seed)  # global RNG untouched
        if not 0 <= seed < 2**63:
            raise CnnkitError(f"seed must be a whole number from 0 to 2**63 - 1, got {seed}")
        try:
            z = noise(n, self.spec.latent_dim, seed)
            return generate_images(self.model.generator, z, labels, self.precision), labels
        except (MemoryError, RuntimeError) as e:
            if isinstance(e, RuntimeError) and "allocate" not in str(e):
                raise
            raise CnnkitError(
                f"not enough memory to make {n:,} images at once: ask for fewer"
            ) from None

    def generate(
        self, n: int = 64, class_name: str | None = None, seed: int | None = None
    ) -> np.ndarray:
        """n images as one uint8 array (n, H, W, 3), RGB; the same seed gives the same images.
        A conditional GAN makes `class_name`'s, or every class in turn (0, 1, ..., C-1, 0, ...)."""
        images, _ = self.generate_tensor(n, class_name, seed)
        return images.permute(0, 2, 3, 1).contiguous().numpy()

    def save(
        self,
        out: str | os.PathLike,
        n: int = 64,
        class_name: str | None = None,
        seed: int | None = None,
    ) -> list[Path]:
        """out.png (or .jpg): one grid; any other path: a folder of PNG files, out/<class>/ for
        a conditional GAN (a classifier's training folder as it is)."""
        out = Path(out)
        grid = out.suffix.lower() in GRID_SUFFIXES
        if grid and out.is_dir():
            raise CnnkitError(f"{out} is a folder: give a grid file's name, or the folder alone")
        output_folder(out.parent if grid else out, "images")  # before any work is done
        images, labels = self.generate_tensor(n, class_name, seed)
        try:
            if grid:
                nrow = self.spec.num_classes if self.conditional and class_name is None else 8
                return [save_grid(images, out, nrow=min(nrow, n))]
            names = [self.classes[int(i)] for i in labels] if labels is not None else None
            return save_folder(images, out, names)
        except OSError as e:
            raise CnnkitError(f"cannot write the images to {out}: {e.strerror or e}") from None

    def predict(self, *args: Any, **kwargs: Any) -> Any:
        raise CnnkitError("a GAN makes images instead of predicting: `cnnkit generate RUN`")

    predict_paths = predict

    # ---- evaluation ----------------------------------------------------------------------------
    def evaluate(
        self,
        data: str | os.PathLike,
        split: str = "test",
        out_dir: str | os.PathLike | None = None,
        progress: bool = True,
        n: int | None = None,
        seed: int = 0,
        tta: str = "none",
        batch_size: int | None = None,
        data_root: str | None = None,
    ) -> GenerationReport:
        """fd_lite0 / kid_lite0 of n generated images against n real images of `split` (on the
        run's own data never its training images), with the floor between those n and n more
        real ones; n defaults to the run's fd_images (1000), at most half the split."""
        from cnnkit.data import load_data

        check_split(split)
        if tta != "none":
            raise CnnkitError("--tta is for classifiers, not GANs")
        own = trained_on(data, self.data_location, self.config)
        splits = load_data(
            data,
            data_root=data_root,
            image_size=self.spec.image_size,
            resize="stretch",
            progress=progress,
            **split_options(self.config, own),
        )
        real, split = choose_split(splits, split, own, data)
        n = min(int(n or self.config.get("fd_images") or DEFAULT_FD_IMAGES), len(real) // 2)
        if n < 2:
            raise CnnkitError(f"{data} has {len(real)} '{split}' images: too few for a distance")
        order = torch.randperm(len(real), generator=torch.Generator().manual_seed(seed))
        first, second = real.images[order[:n]], real.images[order[n : 2 * n]]
        labels = None
        if self.conditional:  # the data's class indices in the model's order
            labels = classes_in_our_order(real.classes, self.classes)[real.labels[order[:n]]]
        generated = generate_images(
            self.model.generator, noise(n, self.spec.latent_dim, seed + 1), labels, self.precision
        )
        real_features = features(first)
        found = distances(features(generated), real_features)
        floor = distances(features(second), real_features)
        note = standard_fid_status()
        fid = standard_fid(generated, first) if note is None else None
        report = GenerationReport(found.fd, found.kid, floor.fd, floor.kid, n, split, fid, note)
        if out_dir is None and self.path is not None:
            out_dir = evaluation_folder(self.path, data, split)
        if out_dir is not None:
            report.out_dir = Path(out_dir)
            report.out_dir.mkdir(parents=True, exist_ok=True)
            (report.out_dir / "generation_metrics.json").write_text(
                json.dumps(report.to_dict(), indent=2)
            )
            save_grid(generated[:64], report.out_dir / "generated.png")
        return report
