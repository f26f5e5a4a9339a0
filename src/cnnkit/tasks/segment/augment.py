"""Mask-aware augmentation of one segmentation sample at a time (torchvision transforms v2).

The image becomes a ``tv_tensors.Image`` and its mask a ``tv_tensors.Mask``, so every geometric
op moves the mask with the pixels: the image is resampled bilinearly, the mask by nearest
neighbour (v2 always does so for masks), so a mask never holds a value it did not have, other
than ignore. Pixels that a zoom out, shift, rotation or crop padding uncovers are grey 114 in the
image and ignore (255) in the mask. Colour jitter touches the image only. The output keeps the
input's size, unless ``crop`` asks for a (crop, crop) window (padded first when the image is
smaller), which gives same-sized samples a batch can stack.

All randomness comes from the caller's ``torch.Generator``: one seed is drawn from it per
sample and the v2 transforms run under ``torch.random.fork_rng`` seeded with it, so the same
generator state replays the same augmentation and the global RNG is left as it was.

``paste_objects`` is Simple Copy-Paste (Ghiasi et al., 2021) for class masks: the pixels of
every class but the first (class 0, background) of one augmented sample are laid over another,
image and mask alike. Written here because torchvision has no copy-paste for semantic masks.
It is meant for data whose class 0 is background: where class 0 is a real class (land cover,
say), nearly every pixel is an "object" and a paste replaces most of the image.

Presets: ``none``; ``basic`` (horizontal flip); ``standard`` (colour jitter, flip, zoom 0.5-2x
with a shift of up to 10% and a rotation of up to 10 degrees).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from cnnkit.data.seeding import draw_seed, global_rng_seeded
from cnnkit.errors import CnnkitError, did_you_mean
from cnnkit.tasks.detect.augment import PAD_VALUE
from cnnkit.tasks.segment.dataset import IGNORE_INDEX

FILL = {tv_tensors.Image: PAD_VALUE, tv_tensors.Mask: IGNORE_INDEX}


@dataclass(frozen=True)
class SegmentAugment:
    """Per-sample augmentation settings; all off by default (the ``none`` preset)."""

    flip: float = 0.0  # probability of a horizontal flip
    scale: tuple[float, float] | None = None  # zoom factor range (> 1 zooms in and crops)
    translate: float = 0.0  # max shift, as a fraction of the image's width / height
    rotation: float = 0.0  # max rotation in degrees, either way
    color_jitter: float = 0.0  # brightness / contrast / saturation factors in [1-s, 1+s]
    crop: int | None = None  # a random (crop, crop) window last (padded if the image is smaller)

    def __post_init__(self) -> None:
        if not 0.0 <= self.flip <= 1.0:
            raise CnnkitError(f"flip probability must be in [0, 1], got {self.flip}")
        if self.scale is not None:
            lo, hi = self.scale
            if not 0 < lo <= hi:
                raise CnnkitError(f"scale must be a range 0 < low <= high, got {self.scale}")
        if not 0.0 <= self.translate < 1.0:
            raise CnnkitError(f"translate must be in [0, 1), got {self.translate}")
        if not 0.0 <= self.rotation <= 180.0:
            raise CnnkitError(f"rotation must be in [0, 180] degrees, got {self.rotation}")
        if not 0.0 <= self.color_jitter < 1.0:
            raise CnnkitError(f"color_jitter must be in [0, 1), got {self.color_jitter}")
        if self.crop is not None and (int(self.crop) != self.crop or self.crop <= 0):
            raise CnnkitError(f"crop must be a positive number of pixels, got {self.crop}")

    @classmethod
    def preset(cls, name: str) -> SegmentAugment:
        """The settings of a named preset (none, basic, standard)."""
        if name not in PRESETS:
            raise did_you_mean("segmentation augmentation preset", name, PRESETS)
        return PRESETS[name]

    @property
    def _zooms(self) -> bool:
        return self.scale not in (None, (1.0, 1.0))

    @property
    def _affine(self) -> bool:
        return self._zooms or self.translate > 0 or self.rotation > 0

    @property
    def is_identity(self) -> bool:
        return self.flip == 0 and not self._affine and self.color_jitter == 0 and not self.crop

    def describe(self) -> str:
        """One line for the console: what this augmentation does."""
        parts = []
        if self.flip:
            parts.append(f"flip {self.flip:g}")
        if self._zooms:
            parts.append(f"zoom {self.scale[0]:g}-{self.scale[1]:g}")
        if self.translate:
            parts.append(f"shift {self.translate:g}")
        if self.rotation:
            parts.append(f"rotate {self.rotation:g} deg")
        if self.color_jitter:
            parts.append(f"colour jitter {self.color_jitter:g}")
        if self.crop:
            parts.append(f"crop {self.crop}")
        return ", ".join(parts) or "none"

    def transforms(self) -> v2.Compose:
        """The v2 pipeline: colour (image only), flip, affine zoom/shift/rotation, crop."""
        ops: list[v2.Transform] = []
        if self.color_jitter > 0:
            s = self.color_jitter
            ops.append(v2.ColorJitter(brightness=s, contrast=s, saturation=s, hue=s / 20))
        if self.flip > 0:
            ops.append(v2.RandomHorizontalFlip(p=self.flip))
        if self._affine:
            ops.append(
                v2.RandomAffine(
                    degrees=self.rotation,
                    translate=(self.translate, self.translate) if self.translate > 0 else None,
                    scale=self.scale,
                    interpolation=v2.InterpolationMode.BILINEAR,
                    fill=FILL,
                )
            )
        if self.crop:
            ops.append(v2.RandomCrop(int(self.crop), pad_if_needed=True, fill=FILL))
        return v2.Compose(ops)


PRESETS: dict[str, SegmentAugment] = {
    "none": SegmentAugment(),
    "basic": SegmentAugment(flip=0.5),
    "standard": SegmentAugment(
        flip=0.5, scale=(0.5, 2.0), translate=0.1, rotation=10.0, color_jitter=0.3
    ),
}


@lru_cache(maxsize=16)
def _pipeline(settings: SegmentAugment) -> v2.Compose:
    return settings.transforms()


def _resolve(augment: SegmentAugment | str) -> SegmentAugment:
    return SegmentAugment.preset(augment) if isinstance(augment, str) else augment


def augment_sample(
    image: torch.Tensor,
    mask: torch.Tensor,
    generator: torch.Generator,
    augment: SegmentAugment | str = "standard",
) -> tuple[torch.Tensor, torch.Tensor]:
    """One augmented copy of a uint8 (3, h, w) image and its (h, w) class mask (same dtype
    back), random from ``generator``."""
    settings = _resolve(augment)
    if mask.shape != image.shape[-2:]:
        raise ValueError(f"mask {tuple(mask.shape)} and image {tuple(image.shape)} differ in size")
    seed = draw_seed(generator)
    if settings.is_identity:
        return image, mask
    with global_rng_seeded(seed):
        out_image, out_mask = _pipeline(settings)(tv_tensors.Image(image), tv_tensors.Mask(mask))
    return out_image.as_subclass(torch.Tensor), out_mask.as_subclass(torch.Tensor)


def augment_batch(
    images: list[torch.Tensor],
    masks: list[torch.Tensor],
    generator: torch.Generator,
    augment: SegmentAugment | str = "standard",
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """augment_sample over lists of images and masks, drawing from one generator in order."""
    if len(images) != len(masks):
        raise ValueError("images and masks must have one entry per sample")
    settings = _resolve(augment)
    pairs = [augment_sample(i, m, generator, settings) for i, m in zip(images, masks, strict=True)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def paste_objects(
    image: torch.Tensor, mask: torch.Tensor, source: torch.Tensor, source_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``image`` and ``mask`` with the objects of a same-sized ``source`` sample laid over them:
    where ``source_mask`` holds a class other than 0 (background) and ignore, the source's
    pixels and classes replace the destination's."""
    if source.shape != image.shape or source_mask.shape != mask.shape:
        raise ValueError(
            f"copy-paste needs samples of one size, got {tuple(image.shape)} and "
            f"{tuple(source.shape)}"
        )
    objects = (source_mask != 0) & (source_mask != IGNORE_INDEX)
    return torch.where(objects, source, image), torch.where(objects, source_mask, mask)
