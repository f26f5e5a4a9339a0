"""Images from a generator: seeded noise -> uint8 images, grids and image folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision.utils import make_grid

from cnnkit.engine.device import Precision

SAMPLE_BATCH = 250


def noise(n: int, latent_dim: int, seed: int) -> torch.Tensor:
    """The standard normal noise (n, latent_dim) a seed gives, drawn on the CPU (the same on
    every device)."""
    return torch.randn(n, latent_dim, generator=torch.Generator().manual_seed(int(seed)))


def class_cycle(n: int, num_classes: int) -> torch.Tensor | None:
    """Labels 0, 1, ..., C-1, 0, 1, ... for a conditional generator (None: unconditional)."""
    return torch.arange(n) % num_classes if num_classes else None


@torch.no_grad()
def generate_images(
    generator: nn.Module,
    z: torch.Tensor,
    labels: torch.Tensor | None,
    precision: Precision | None = None,
    batch: int = SAMPLE_BATCH,
) -> torch.Tensor:
    """uint8 images (N, 3, S, S) from noise (N, latent_dim) [and labels], in eval mode (the
    BatchNorm running statistics), the training mode restored afterwards."""
    device = next(generator.parameters()).device
    was_training = generator.training
    generator.eval()
    out = []
    try:
        for i in range(0, len(z), batch):
            zb = z[i : i + batch].to(device)
            lb = labels[i : i + batch].to(device) if labels is not None else None
            if precision is not None:
                with precision.autocast():
                    images = generator(zb, lb)
            else:
                images = generator(zb, lb)
            out.append(to_uint8(images.float()).cpu())
    finally:
        generator.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, 3, 1, 1, dtype=torch.uint8)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats -> uint8 [0, 255] (rounded)."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> floats in [-1, 1] (what the discriminator sees and tanh makes)."""
    return images.float() / 127.5 - 1.0


def save_grid(images: torch.Tensor, path: str | Path, nrow: int = 8) -> Path:
    """uint8 images (N, 3, H, W) as one PNG grid, `nrow` images a row, 2 px white gaps."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid = make_grid(images, nrow=nrow, padding=2, pad_value=255)
    Image.fromarray(grid.permute(1, 2, 0).numpy()).save(path)
    return path


def save_folder(
    images: torch.Tensor, out: str | Path, class_names: list[str] | None = None
) -> list[Path]:
    """One PNG per image: out/00000.png, or out/<class>/00000.png with class names (a folder a
    classifier trains on as it is). A folder that holds images already keeps them: the
    numbers go on from its highest."""
    out = Path(out)
    written = []
    following: dict[Path, int] = {}
    for i, image in enumerate(images):
        folder = out / class_names[i] if class_names else out
        if folder not in following:
            folder.mkdir(parents=True, exist_ok=True)
            taken = [
                int(p.stem) for p in folder.glob("*.png") if p.stem.isascii() and p.stem.isdigit()
            ]
            following[folder] = max(taken, default=-1) + 1
        path = folder / f"{following[folder]:05d}.png"
        following[folder] += 1
        Image.fromarray(np.ascontiguousarray(image.permute(1, 2, 0).numpy())).save(path)
        written.append(path)
    return written
