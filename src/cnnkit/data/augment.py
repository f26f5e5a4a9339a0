"""Batch-level data augmentation on the device: uint8 (B, 3, H, W) in, uint8 out.

Every per-image random choice is drawn as a vector from the caller's CPU ``torch.Generator``
(then moved to the images' device), so the same generator state gives the same batch on any
device and no Python runs per image. Order of the ops within one call:

1. geometry: flip + crop/translate (+ rotation + scale). Flip/crop only is an exact integer
   gather; with rotation or scale, one affine matrix per image and ONE bilinear grid_sample.
2. colour jitter (float: brightness, contrast, saturation), then grey-scale for a chosen share of
   images; one rounding back to uint8 after 1+2.
3. TrivialAugmentWide / RandAugment (torchvision v2 on uint8), one op per group of images.
4. random erasing (one rectangle of uniform noise per chosen image; exact).
5. mixup or cutmix over the batch (one lambda and one permutation per batch).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from cnnkit.data.seeding import draw_seed, global_rng_seeded
from cnnkit.errors import CnnkitError, did_you_mean

AUTOAUGMENT_GROUP = 8  # images that share one TrivialAugment/RandAugment op (see _auto_augment)
ERASE_AREA = (0.02, 0.33)  # fraction of the image, as torchvision RandomErasing
ERASE_ASPECT = (0.3, 3.3)
_GRAY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights


@dataclass
class AugmentConfig:
    """Which augmentations to apply to each training batch, and how strongly."""

    flip: bool = False  # horizontal flip, p=0.5 per image
    # airbench's alternating flip: each image is mirrored in every other epoch (a seeded coin
    # picks which), so consecutive epochs see both orientations; implies `flip`
    alternating_flip: bool = False
    crop_padding: int = 0  # random crop after reflect-padding by N px (translation up to N)
    rotation: float = 0.0  # max degrees, uniform in [-r, r] per image
    scale: tuple[float, float] | None = None  # zoom factor range per image (>1 zooms in)
    color_jitter: float = 0.0  # brightness/contrast/saturation factors in [1-s, 1+s]
    erasing: float = 0.0  # probability of one random-erasing rectangle per image
    # probability of turning an image grey (its luma in all three channels), as torchvision's
    # RandomGrayscale: a model that will meet grey photos (scans, old or IR cameras) learns them
    grayscale: float = 0.0
    trivialaugment: bool = False  # TrivialAugmentWide, one op per group of images
    randaugment: bool = False  # RandAugment(num_ops=2, magnitude=9), one op set per group
    mixup: float = 0.0  # Beta(alpha, alpha); 0 = off
    cutmix: float = 0.0  # Beta(alpha, alpha); 0 = off (both on: one of them per batch)

    def __post_init__(self) -> None:
        self.alternating_flip = bool(self.alternating_flip)
        self.flip = bool(self.flip) or self.alternating_flip
        self.trivialaugment = bool(self.trivialaugment)
        self.randaugment = bool(self.randaugment)
        for name in (
            "crop_padding",
            "rotation",
            "color_jitter",
            "mixup",
            "cutmix",
            "erasing",
            "grayscale",
        ):
            if isinstance(getattr(self, name), bool):  # `mixup: true` in YAML: say how much
                raise CnnkitError(f"augment {name} takes a number, got {getattr(self, name)}")
        if int(self.crop_padding) != self.crop_padding or self.crop_padding < 0:
            raise CnnkitError(
                f"crop_padding must be a non-negative integer, got {self.crop_padding}"
            )
        self.crop_padding = int(self.crop_padding)
        for name in ("rotation", "color_jitter", "mixup", "cutmix"):
            value = float(getattr(self, name))
            if not math.isfinite(value) or value < 0:
                raise CnnkitError(f"augment {name} must be >= 0, got {getattr(self, name)}")
            setattr(self, name, value)
        for name in ("erasing", "grayscale"):
            value = float(getattr(self, name))
            if not 0.0 <= value <= 1.0:
                raise CnnkitError(
                    f"augment {name} is a probability in [0, 1], got {getattr(self, name)}"
                )
            setattr(self, name, value)
        if self.scale is not None:
            if isinstance(self.scale, (str, bytes)) or len(self.scale) != 2:
                raise CnnkitError(f"augment scale must be (low, high), got {self.scale!r}")
            lo, hi = (float(v) for v in self.scale)
            if not 0 < lo <= hi:
                raise CnnkitError(
                    f"augment scale must be (low, high) with 0 < low <= high, got {self.scale}"
                )
            self.scale = (lo, hi)
        if self.trivialaugment and self.randaugment:
            raise CnnkitError("choose one of trivialaugment and randaugment, not both")

    @property
    def soft_targets(self) -> bool:
        """True when mixup or cutmix is on: targets become (B, num_classes) probabilities."""
        return self.mixup > 0 or self.cutmix > 0

    def is_identity(self) -> bool:
        """True when no augmentation is on (the batch passes through unchanged)."""
        return self == AugmentConfig()

    def describe(self) -> str:
        """What is on, in a few words: "flip, crop 4, rotation 10, ..." or "none"."""
        scale = f"{self.scale[0]:g}-{self.scale[1]:g}" if self.scale is not None else None
        parts = [
            ("alternating flip" if self.alternating_flip else "flip") if self.flip else None,
            f"crop {self.crop_padding}" if self.crop_padding else None,
            f"rotation {self.rotation:g}" if self.rotation else None,
            f"zoom {scale}" if scale else None,
            f"colour jitter {self.color_jitter:g}" if self.color_jitter else None,
            f"grey {self.grayscale:g}" if self.grayscale else None,
            f"erasing {self.erasing:g}" if self.erasing else None,
            "trivialaugment" if self.trivialaugment else None,
            "randaugment" if self.randaugment else None,
            f"mixup {self.mixup:g}" if self.mixup else None,
            f"cutmix {self.cutmix:g}" if self.cutmix else None,
        ]
        return ", ".join(p for p in parts if p) or "none"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["scale"] = list(self.scale) if self.scale is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> AugmentConfig:
        names = {f.name for f in fields(cls)}
        for key in d:
            if key not in names:
                raise did_you_mean("augment option", str(key), names)
        return cls(**d)


# Presets. "basic" is the classic CIFAR recipe (He et al. 2016). "strong" adds TrivialAugment
# (no magnitude to tune; the best single policy in Mueller & Hutter 2021) and mixing with the
# papers' own defaults: mixup alpha 0.2 (Zhang et al. 2018, ImageNet: mild mixing that keeps most
# images nearly clean, which suits short runs and small CNNs better than alpha 1) and CutMix
# alpha 1.0 (Yun et al. 2019: lambda uniform on [0, 1]); with both on, each batch uses one of them.
_BASIC = AugmentConfig(flip=True, crop_padding=4)
_STANDARD = replace(_BASIC, rotation=10.0, scale=(0.9, 1.1), color_jitter=0.2, erasing=0.25)
PRESETS: dict[str, AugmentConfig] = {
    "none": AugmentConfig(),
    "basic": _BASIC,
    "standard": _STANDARD,
    "strong": replace(_STANDARD, trivialaugment=True, mixup=0.2, cutmix=1.0),
}


def augment_config(preset: str = "none", **overrides) -> AugmentConfig:
    """A preset ("none", "basic", "standard", "strong") with some fields overridden."""
    if preset not in PRESETS:
        raise did_you_mean("augment preset", str(preset), PRESETS)
    names = {f.name for f in fields(AugmentConfig)}
    for key in overrides:
        if key not in names:
            raise did_you_mean("augment option", key, names)
    return replace(PRESETS[preset], **overrides)


def alternating_flips(n: int, seed: int, epoch: int) -> torch.Tensor:
    """Which of `n` images an alternating flip mirrors in `epoch` (bool (n,), CPU).

    Epoch 0 mirrors a seeded random half; every later epoch mirrors exactly the images the
    epoch before did not, so each image is seen in both orientations over any two consecutive
    epochs (airbench, arXiv:2404.00498).
    """
    mixed = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, 0xF11B])
    g = torch.Generator().manual_seed(int(mixed.generate_state(1, np.uint64)[0] >> 1))
    first = torch.rand(n, generator=g) < 0.5
    return first ^ bool(epoch % 2)


def augment_generator(seed: int, epoch: int, step: int) -> torch.Generator:
    """A CPU generator for one training step, independent of the shuffle generator.

    Seeding per (seed, epoch, step) makes a resumed run (which skips the finished steps of an
    epoch) draw exactly the augmentations an uninterrupted run would have drawn.
    """
    entropy = [int(seed) & 0xFFFFFFFF, int(epoch), int(step)]
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        entropy.append(dist.get_rank())  # under torchrun each rank draws its own
    mixed = np.random.SeedSequence(entropy)
    return torch.Generator().manual_seed(int(mixed.generate_state(1, np.uint64)[0] >> 1))


# ---------------------------------------------------------------- ops
def _send(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small CPU tensor (a batch's random draws) on `device`. To CUDA it goes through pinned
    memory without blocking: a plain copy from pageable memory synchronises the stream, so the
    host would wait for the GPU to drain at every step instead of queueing the next one."""
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def reflect_index(index: torch.Tensor, size: int) -> torch.Tensor:
    """Indices outside [0, size) mirrored like F.pad(mode="reflect") (edge not repeated)."""
    if size == 1:
        return torch.zeros_like(index)
    period = 2 * (size - 1)
    index = index.remainder(period)
    return torch.where(index >= size, period - index, index)


def _flip_crop(
    x: torch.Tensor, flip: torch.Tensor | None, shift: torch.Tensor | None
) -> torch.Tensor:
    """Exact flip + integer translation with reflect padding, as two gathers (no arithmetic).

    Output pixel (y, x) of image b is input (reflect(y - dy), reflect(x - dx)), read mirrored
    in x when b is flipped: the same pixels as torchvision RandomCrop(padding, "reflect") + flip.
    """
    b, c, h, w = x.shape
    dev = x.device  # the indices are built there: only the draws (b and 2b numbers) travel
    rows = torch.arange(h, device=dev).expand(b, h)
    cols = torch.arange(w, device=dev).expand(b, w)
    if shift is not None:
        shift = _send(shift, dev)
        rows = reflect_index(rows - shift[:, :1], h)
        cols = reflect_index(cols - shift[:, 1:], w)
    if flip is not None:
        cols = torch.where(_send(flip, dev)[:, None], w - 1 - cols, cols)
    flat = (rows[:, :, None] * w + cols[:, None, :]).view(b, 1, h * w)
    return x.reshape(b, c, h * w).gather(2, flat.expand(b, c, h * w)).view(b, c, h, w)


def _affine(
    x: torch.Tensor,
    flip: torch.Tensor,
    shift: torch.Tensor,
    angle: torch.Tensor,
    zoom: torch.Tensor,
) -> torch.Tensor:
    """Flip, translate, rotate and zoom float images with one bilinear grid_sample.

    Per image, output = zoom * R(angle) * Flip(input) + shift about the image centre (pixel
    units). Out-of-image samples use reflection padding: no black wedges or borders, which the
    network would otherwise learn as a training-only artefact, and translation matches the
    reflect-padded crop of the exact path (grid_sample mirrors about the border edge, so the
    border pixel repeats once, unlike F.pad's "reflect").
    """
    b, _, h, w = x.shape
    cos, sin = torch.cos(angle), torch.sin(angle)
    f = torch.where(flip, -1.0, 1.0)
    # A = Flip @ R(-angle) / zoom maps output (u, v) to input, in pixel units from the centre.
    a00, a01 = f * cos / zoom, f * sin / zoom
    a10, a11 = -sin / zoom, cos / zoom
    tx, ty = shift[:, 1].float(), shift[:, 0].float()
    bx, by = -(a00 * tx + a01 * ty), -(a10 * tx + a11 * ty)
    # Grid in normalised coordinates (align_corners=False: u = x_n * w / 2, v = y_n * h / 2),
    t = torch.stack([a00, a01 * h / w, bx * 2 / w, a10 * w / h, a11, by * 2 / h], 1)
    t = _send(t, x.device).view(b, 6, 1, 1)
    xs = ((torch.arange(w, device=x.device, dtype=torch.float32) * 2 + 1) / w - 1).view(1, w)
    ys = ((torch.arange(h, device=x.device, dtype=torch.float32) * 2 + 1) / h - 1).view(h, 1)
    grid = torch.empty(b, h, w, 2, device=x.device)  # by broadcasting: cheaper than F.affine_grid
    grid[..., 0] = t[:, 0] * xs + t[:, 1] * ys + t[:, 2]
    grid[..., 1] = t[:, 3] * xs + t[:, 4] * ys + t[:, 5]
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def _gray(x: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) luma of float (B, 3, H, W), with torchvision's weights."""
    gray = x[:, 0:1] * _GRAY[0]
    return gray.add_(x[:, 1:2], alpha=_GRAY[1]).add_(x[:, 2:3], alpha=_GRAY[2])


def _color_jitter(x: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Brightness, contrast, saturation (torchvision formulas) on float 0..255 images, in place.

    Each step is blend(x, reference, factor) = x * f + reference * (1 - f), clamped to 0..255;
    the last clamp is left to the uint8 conversion.
    """
    b = x.shape[0]
    bright, contrast, sat = _send(factors, x.device).view(b, 3, 1, 1, 1).unbind(1)
    x.mul_(bright).clamp_(0, 255)
    mean = _gray(x).mean((2, 3), keepdim=True)
    x.mul_(contrast).add_(mean * (1 - contrast)).clamp_(0, 255)
    gray = _gray(x).mul_(1 - sat)  # of the image before this blend, not after
    return x.mul_(sat).add_(gray)


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return x.round_().clamp_(0, 255).to(torch.uint8)


def _erase(x: torch.Tensor, p: float, g: torch.Generator) -> torch.Tensor:
    """One rectangle of uniform noise in each image chosen with probability p (exact, vectorised).

    Area 2-33% of the image and log-uniform aspect 0.3-3.3 as RandomErasing; a side longer than
    the image is clamped to it (torchvision retries instead), so extreme draws are slightly
    smaller than asked.
    """
    b, c, h, w = x.shape
    chosen = torch.rand(b, generator=g, device="cpu") < p
    u = torch.rand(b, 4, generator=g, device="cpu")
    idx = chosen.nonzero().flatten()
    if idx.numel() == 0:
        return x
    u = u[idx]
    area = h * w * (ERASE_AREA[0] + (ERASE_AREA[1] - ERASE_AREA[0]) * u[:, 0])
    log_lo, log_hi = math.log(ERASE_ASPECT[0]), math.log(ERASE_ASPECT[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u[:, 1])
    eh = torch.sqrt(area * aspect).round().clamp(1, h).long()
    ew = torch.sqrt(area / aspect).round().clamp(1, w).long()
    top = (u[:, 2] * (h - eh + 1)).long().clamp(max=h - 1)
    left = (u[:, 3] * (w - ew + 1)).long().clamp(max=w - 1)
    rows = torch.arange(h, device="cpu")
    cols = torch.arange(w, device="cpu")
    in_rows = (rows >= top[:, None]) & (rows < (top + eh)[:, None])
    in_cols = (cols >= left[:, None]) & (cols < (left + ew)[:, None])
    mask = (in_rows[:, :, None] & in_cols[:, None, :])[:, None]  # (k, 1, h, w)
    noise = torch.randint(
        0, 256, (idx.numel(), c, h, w), generator=g, device="cpu", dtype=torch.uint8
    )
    dev_idx = _send(idx, x.device)
    out = x.clone()
    out[dev_idx] = torch.where(_send(mask, x.device), _send(noise, x.device), x[dev_idx])
    return out


def _auto_augment(x: torch.Tensor, policy, g: torch.Generator) -> torch.Tensor:
    """Apply a torchvision v2 auto-augment policy to groups of AUTOAUGMENT_GROUP images.

    A v2 transform draws one op (and magnitude) per call and applies it to every image it is
    given, so the batch is split into groups: a Python loop over B/8 groups, not over images.
    The policy draws from torch's global CPU RNG, so it runs inside fork_rng seeded from ``g``:
    reproducible, and the caller's global RNG state is left untouched.
    """
    seed = draw_seed(g)
    out = torch.empty_like(x)
    with global_rng_seeded(seed):
        for start in range(0, x.shape[0], AUTOAUGMENT_GROUP):
            out[start : start + AUTOAUGMENT_GROUP] = policy(x[start : start + AUTOAUGMENT_GROUP])
    return out


def _beta(alpha: float, g: torch.Generator) -> float:
    """lambda ~ Beta(alpha, alpha) from a numpy generator seeded by ``g`` (torch's is global)."""
    seed = int(torch.randint(0, 2**62, (1,), generator=g, device="cpu"))
    return float(np.random.default_rng(seed).beta(alpha, alpha))


class BatchAugment:
    """Augment batches on their device: ``(images, labels, generator) -> (images, targets)``.

    ``targets`` are the int64 labels unchanged unless mixup/cutmix is on; then float
    (B, num_classes) probabilities whose rows sum to 1 (CrossEntropyLoss accepts them as is).
    Multi-hot labels (B, num_classes) come back as float targets, blended by mixup/cutmix with
    the same weights as the images (soft targets for binary cross-entropy).
    """

    def __init__(self, cfg: AugmentConfig, num_classes: int) -> None:
        if cfg.soft_targets and num_classes < 1:
            raise ValueError(f"num_classes must be positive for mixup/cutmix, got {num_classes}")
        self.cfg = cfg
        self.num_classes = int(num_classes)
        self._policy = None
        if cfg.trivialaugment or cfg.randaugment:
            from torchvision.transforms import v2

            self._policy = (
                v2.TrivialAugmentWide()
                if cfg.trivialaugment
                else v2.RandAugment(num_ops=2, magnitude=9)
            )

    @property
    def soft_targets(self) -> bool:
        return self.cfg.soft_targets

    def __repr__(self) -> str:
        return f"BatchAugment({self.cfg}, num_classes={self.num_classes})"

    def __call__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        generator: torch.Generator,
        flip: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`flip` (bool (B,), CPU) decides which images to mirror instead of a random draw,
        when flipping is on (an alternating flip's choice for this epoch)."""
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(
                f"images must be uint8 (B, 3, H, W), got {images.dtype} {tuple(images.shape)}"
            )
        if generator.device.type != "cpu":
            raise ValueError("BatchAugment draws from a CPU torch.Generator")
        cfg, g = self.cfg, generator
        b, _, h, w = images.shape
        dtype = torch.float32 if labels.dim() == 2 else torch.int64  # multi-hot: float
        labels = labels.to(device=images.device, dtype=dtype)
        if cfg.is_identity() or b == 0:
            return images, self._targets(labels)
        x = images
        xf: torch.Tensor | None = None  # float 0..255 version, when an op needs one

        if not cfg.flip:
            flip = None
        elif flip is None:
            flip = torch.rand(b, generator=g, device="cpu") < 0.5
        elif flip.shape != (b,) or flip.dtype != torch.bool:
            raise ValueError(f"flip must be bool ({b},), got {flip.dtype} {tuple(flip.shape)}")
        else:
            flip = flip.cpu()
        shift = None
        if cfg.crop_padding:
            n = cfg.crop_padding
            shift = torch.randint(-n, n + 1, (b, 2), generator=g, device="cpu")
        if cfg.rotation or cfg.scale is not None:
            angle = (torch.rand(b, generator=g, device="cpu") * 2 - 1) * math.radians(cfg.rotation)
            lo, hi = cfg.scale or (1.0, 1.0)
            zoom = lo + (hi - lo) * torch.rand(b, generator=g, device="cpu")
            xf = _affine(
                x.float(),
                flip if flip is not None else torch.zeros(b, dtype=torch.bool, device="cpu"),
                shift if shift is not None else torch.zeros(b, 2, dtype=torch.long, device="cpu"),
                angle,
                zoom,
            )
        elif flip is not None or shift is not None:
            x = _flip_crop(x, flip, shift)

        if cfg.color_jitter:
            s = cfg.color_jitter
            factors = max(0.0, 1 - s) + (1 + s - max(0.0, 1 - s)) * torch.rand(
                b, 3, generator=g, device="cpu"
            )
            xf = _color_jitter(xf if xf is not None else x.float(), factors)
        if cfg.grayscale:
            chosen = _send(torch.rand(b, generator=g, device="cpu") < cfg.grayscale, x.device)
            xf = xf if xf is not None else x.float()
            xf = torch.where(chosen.view(b, 1, 1, 1), _gray(xf).expand_as(xf), xf)
        if xf is not None:
            x = _to_uint8(xf)

        if self._policy is not None:
            x = _auto_augment(x, self._policy, g)
        if cfg.erasing:
            x = _erase(x, cfg.erasing, g)
        if cfg.soft_targets:
            return self._mix(x, labels, g)
        return x, labels

    def _targets(self, labels: torch.Tensor) -> torch.Tensor:
        if not self.soft_targets or labels.dim() == 2:
            return labels
        return F.one_hot(labels, self.num_classes).float()

    def _mix(
        self, x: torch.Tensor, labels: torch.Tensor, g: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mixup or CutMix with one lambda and one partner permutation for the whole batch."""
        cfg = self.cfg
        b, _, h, w = x.shape
        use_cutmix = cfg.cutmix > 0
        if cfg.mixup > 0 and cfg.cutmix > 0:
            use_cutmix = bool(torch.rand(1, generator=g, device="cpu") < 0.5)
        perm = _send(torch.randperm(b, generator=g, device="cpu"), x.device)
        if use_cutmix:
            lam = _beta(cfg.cutmix, g)
            cy = int(torch.randint(0, h, (1,), generator=g, device="cpu"))
            cx = int(torch.randint(0, w, (1,), generator=g, device="cpu"))
            cut = math.sqrt(1.0 - lam)
            ch, cw = int(h * cut), int(w * cut)
            y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
            x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
            out = x.clone()
            out[:, :, y0:y1, x0:x1] = x[perm, :, y0:y1, x0:x1]
            lam = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)  # the pasted area decides the weights
        else:
            lam = _beta(cfg.mixup, g)
            # The beta is symmetric, so max(lam, 1 - lam) mixes the same pairs in distribution
            # while each image stays dominated by (and its argmax target is) its own label.
            lam = max(lam, 1.0 - lam)
            out = _to_uint8(x.float() * lam + x[perm].float() * (1.0 - lam))
        onehot = labels if labels.dim() == 2 else F.one_hot(labels, self.num_classes).float()
        return out, onehot * lam + onehot[perm] * (1.0 - lam)
