"""Box-aware augmentation of one detection sample at a time (torchvision transforms v2).

The image becomes a ``tv_tensors.Image`` and its boxes ``tv_tensors.BoundingBoxes`` (XYXY), so
every geometric op moves the boxes with the pixels. Afterwards boxes are clipped to the image
and those left (near) empty are dropped (``SanitizeBoundingBoxes``), with labels and crowd
flags kept aligned. All randomness comes from the caller's ``torch.Generator``: one seed is
drawn from it per sample and the v2 transforms run under ``torch.random.fork_rng`` seeded
with it, so the same generator state replays the same augmentation and the global RNG is left
as it was.

Presets: ``none``; ``basic`` (horizontal flip); ``standard`` (colour jitter, flip, and scale
jitter with translation: a zoom in by up to 1.5x crops, a zoom out to 0.5x pads with grey 114).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from cnnkit.data.seeding import draw_seed, global_rng_seeded
from cnnkit.errors import CnnkitError, did_you_mean
from cnnkit.tasks.detect.dataset import BoxTarget

PAD_VALUE = 114  # grey for pixels a zoom-out or shift uncovers (as letterbox pads)


@dataclass(frozen=True)
class DetectAugment:
    """Per-sample augmentation settings; all off by default (the ``none`` preset)."""

    flip: float = 0.0  # probability of a horizontal flip
    scale: tuple[float, float] | None = None  # zoom factor range (> 1 zooms in and crops)
    translate: float = 0.0  # max shift, as a fraction of the image's width / height
    color_jitter: float = 0.0  # brightness / contrast / saturation factors in [1-s, 1+s]
    min_box_size: float = 1.0  # px: boxes narrower or shorter than this afterwards are dropped

    def __post_init__(self) -> None:
        if not 0.0 <= self.flip <= 1.0:
            raise CnnkitError(f"flip probability must be in [0, 1], got {self.flip}")
        if self.scale is not None:
            lo, hi = self.scale
            if not 0 < lo <= hi:
                raise CnnkitError(f"scale must be a range 0 < low <= high, got {self.scale}")
        if not 0.0 <= self.translate < 1.0:
            raise CnnkitError(f"translate must be in [0, 1), got {self.translate}")
        if not 0.0 <= self.color_jitter < 1.0:
            raise CnnkitError(f"color_jitter must be in [0, 1), got {self.color_jitter}")

    @classmethod
    def preset(cls, name: str) -> DetectAugment:
        """The settings of a named preset (none, basic, standard)."""
        if name not in PRESETS:
            raise did_you_mean("detection augmentation preset", name, PRESETS)
        return PRESETS[name]

    @property
    def is_identity(self) -> bool:
        return (
            self.flip == 0
            and self.scale in (None, (1.0, 1.0))
            and self.translate == 0
            and self.color_jitter == 0
        )

    def describe(self) -> str:
        """One line for the console: what this augmentation does."""
        parts = []
        if self.flip:
            parts.append(f"flip {self.flip:g}")
        if self.scale not in (None, (1.0, 1.0)):
            parts.append(f"zoom {self.scale[0]:g}-{self.scale[1]:g}")
        if self.translate:
            parts.append(f"shift {self.translate:g}")
        if self.color_jitter:
            parts.append(f"colour jitter {self.color_jitter:g}")
        return ", ".join(parts) or "none"

    def transforms(self) -> v2.Compose:
        """The v2 pipeline: colour, flip, affine zoom/shift, then clip and drop empty boxes."""
        ops: list[v2.Transform] = []
        if self.color_jitter > 0:
            s = self.color_jitter
            ops.append(v2.ColorJitter(brightness=s, contrast=s, saturation=s, hue=s / 20))
        if self.flip > 0:
            ops.append(v2.RandomHorizontalFlip(p=self.flip))
        if self.scale not in (None, (1.0, 1.0)) or self.translate > 0:
            ops.append(
                v2.RandomAffine(
                    degrees=0.0,
                    translate=(self.translate, self.translate) if self.translate > 0 else None,
                    scale=self.scale,
                    interpolation=v2.InterpolationMode.BILINEAR,
                    fill=PAD_VALUE,
                )
            )
        ops += [v2.ClampBoundingBoxes(), v2.SanitizeBoundingBoxes(min_size=self.min_box_size)]
        return v2.Compose(ops)


PRESETS: dict[str, DetectAugment] = {
    "none": DetectAugment(),
    "basic": DetectAugment(flip=0.5),
    "standard": DetectAugment(flip=0.5, scale=(0.5, 1.5), translate=0.1, color_jitter=0.3),
}


@lru_cache(maxsize=16)
def _pipeline(settings: DetectAugment) -> v2.Compose:
    return settings.transforms()


def _resolve(augment: DetectAugment | str) -> DetectAugment:
    return DetectAugment.preset(augment) if isinstance(augment, str) else augment


def augment_sample(
    image: torch.Tensor,
    target: BoxTarget,
    generator: torch.Generator,
    augment: DetectAugment | str = "standard",
) -> tuple[torch.Tensor, BoxTarget]:
    """One augmented copy of a uint8 (3, h, w) image and its boxes, random from ``generator``."""
    settings = _resolve(augment)
    seed = draw_seed(generator)
    if settings.is_identity:
        return image, target
    height, width = image.shape[-2:]
    boxes = tv_tensors.BoundingBoxes(
        target.boxes, format=tv_tensors.BoundingBoxFormat.XYXY, canvas_size=(height, width)
    )
    # SanitizeBoundingBoxes filters "labels"; object positions let labels and crowd follow.
    positions = torch.arange(len(target))
    with global_rng_seeded(seed):
        out_image, out = _pipeline(settings)(
            tv_tensors.Image(image), {"boxes": boxes, "labels": positions}
        )
    kept = out["labels"]
    result = BoxTarget(
        out["boxes"].as_subclass(torch.Tensor).clone(),
        target.labels[kept],
        target.iscrowd[kept],
    )
    return out_image.as_subclass(torch.Tensor), result


def augment_batch(
    images: list[torch.Tensor],
    targets: list[BoxTarget],
    generator: torch.Generator,
    augment: DetectAugment | str = "standard",
) -> tuple[list[torch.Tensor], list[BoxTarget]]:
    """augment_sample over lists of images and targets, drawing from one generator in order."""
    if len(images) != len(targets):
        raise ValueError("images and targets must have one entry per sample")
    settings = _resolve(augment)
    pairs = [
        augment_sample(i, t, generator, settings) for i, t in zip(images, targets, strict=True)
    ]
    return [p[0] for p in pairs], [p[1] for p in pairs]
