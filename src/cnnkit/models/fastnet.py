"""fastnet: a compact CIFAR network with the ingredients of fast CIFAR-10 training.

The design follows the published airbench recipe (Keller Jordan, "94% on CIFAR-10 in 3.29
seconds on a single GPU", arXiv:2404.00498); the code here is cnnkit's own:

- a first 2x2 convolution whose weights are the whitening transform of 2x2 patches of the
  training images (eigenvectors of their covariance, scaled by 1/sqrt(eigenvalue), and their
  negatives), set once from data by ``init_from_data`` and frozen; its bias (zero at the start)
  trains for the first ``whiten_bias_epochs`` epochs and is then frozen too: the trainer calls
  the model's ``start_epoch`` hook before each epoch; ``whiten_bias_lr_scale`` makes it learn
  faster the same way as the BatchNorm shifts below (airbench94: 1, airbench94_muon: 64);
- three blocks of (conv 3x3, max-pool 2, BatchNorm, GELU, conv 3x3, BatchNorm, GELU);
- BatchNorm tuned for short runs: no scale (fixed at 1), a learned shift, momentum 0.4 (a short
  memory, as the weights move fast), a tiny eps; the shift learns ``shift_lr_scale`` times
  faster than the weights through a reparametrisation (see ``ShiftNorm``), so one optimiser
  group with one learning rate serves the whole network;
- global max-pooling, a bias-free linear layer, and logits scaled down (x 1/9).

Everything lives in ordinary parameters and buffers, so ``state_dict`` round-trips and a model
rebuilt by ``create_model(spec)`` takes its whitening weights from the checkpoint.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.errors import CnnkitError
from cnnkit.models.registry import register_model

WHITEN_KERNEL = 2
DEFAULT_WIDTHS = (64, 256, 256)  # airbench94's widths
CPU_WIDTHS = (32, 96, 96)  # the cifar10-cpu preset's: ~1/5 of the compute (see presets.py)
WIDE_WIDTHS = (128, 384, 384)  # airbench95's, the cifar10-95 preset's


class ShiftNorm(nn.BatchNorm2d):
    """BatchNorm without a learned scale, with a learned shift that trains `lr_scale` times
    faster than the other weights.

    The stored parameter ``bias`` is multiplied by ``sqrt(lr_scale)`` in the forward pass: its
    gradient grows by that factor and so does each update's effect on the output, so SGD moves
    the effective shift ``lr_scale`` times faster, while plain (coupled) weight decay shrinks it
    at the same rate as the other weights: what a separate optimiser group with ``lr_scale``
    times the learning rate and ``1/lr_scale`` times the weight decay would do.
    """

    def __init__(
        self, channels: int, momentum: float = 0.4, eps: float = 1e-12, lr_scale: float = 64.0
    ) -> None:
        super().__init__(channels, eps=eps, momentum=momentum, affine=False)
        self.bias = nn.Parameter(torch.zeros(channels))
        self.bias_multiplier = math.sqrt(lr_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.num_batches_tracked.add_(1)
        return F.batch_norm(
            x,
            self.running_mean,
            self.running_var,
            None,
            self.bias * self.bias_multiplier,
            self.training,
            self.momentum,
            self.eps,
        )


class WhiteningConv(nn.Conv2d):
    """The 2x2 whitening convolution (padding 0), whose bias enters multiplied by
    ``bias_multiplier``: stored smaller, it learns multiplier**2 times faster (see ShiftNorm)."""

    def __init__(self, channels_in: int, channels_out: int, bias_lr_scale: float = 1.0) -> None:
        super().__init__(channels_in, channels_out, WHITEN_KERNEL, padding=0, bias=True)
        self.bias_multiplier = math.sqrt(bias_lr_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias if self.bias_multiplier == 1.0 else self.bias * self.bias_multiplier
        return self._conv_forward(x, self.weight, bias)


def _conv(channels_in: int, channels_out: int) -> nn.Conv2d:
    """3x3 'same' convolution without bias; the first channels_in filters start as identity
    (a Dirac kernel), so each block initially passes its input through."""
    conv = nn.Conv2d(channels_in, channels_out, 3, padding=1, bias=False)
    with torch.no_grad():
        nn.init.dirac_(conv.weight[: min(channels_in, channels_out)])
    return conv


class ConvBlock(nn.Module):
    """conv -> max-pool 2 -> norm -> GELU, then (depth - 1) x (conv -> norm -> GELU)."""

    def __init__(
        self, channels_in: int, channels_out: int, depth: int, momentum: float, lr_scale: float
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(depth):
            layers.append(_conv(channels_in if i == 0 else channels_out, channels_out))
            if i == 0:
                layers.append(nn.MaxPool2d(2))
            layers += [ShiftNorm(channels_out, momentum, lr_scale=lr_scale), nn.GELU()]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class FastNet(nn.Module):
    """Frozen whitening conv, GELU, conv blocks, global max-pool, scaled linear logits."""

    def __init__(
        self,
        num_classes: int = 10,
        widths: Sequence[int] = DEFAULT_WIDTHS,
        depth: int = 2,
        scale: float = 1 / 9,
        bn_momentum: float = 0.4,
        shift_lr_scale: float = 64.0,
        whiten_eps: float = 5e-4,
        whiten_bias_epochs: int = 0,
        in_channels: int = 3,
        whiten_bias_lr_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if whiten_bias_epochs < 0:
            raise CnnkitError(f"fastnet whiten_bias_epochs must be >= 0, got {whiten_bias_epochs}")
        if not whiten_bias_lr_scale > 0:
            raise CnnkitError(
                f"fastnet whiten_bias_lr_scale must be positive, got {whiten_bias_lr_scale}"
            )
        patch = in_channels * WHITEN_KERNEL**2
        self.whiten = WhiteningConv(in_channels, 2 * patch, whiten_bias_lr_scale)
        self.whiten.weight.requires_grad_(False)
        nn.init.zeros_(self.whiten.bias)
        self.whiten_eps = float(whiten_eps)
        self.whiten_bias_epochs = int(whiten_bias_epochs)
        self.start_epoch(0)
        blocks, channels = [], 2 * patch
        for width in widths:
            blocks.append(ConvBlock(channels, int(width), depth, bn_momentum, shift_lr_scale))
            channels = int(width)
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(channels, num_classes, bias=False)
        self.scale = float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.whiten(x))
        x = self.blocks(x)
        x = torch.amax(x, dim=(2, 3))  # global max-pool
        return self.head(x) * self.scale

    def start_epoch(self, epoch: int) -> None:
        """Before training epoch `epoch` (0-based, over the whole run): the whitening bias
        trains in the first ``whiten_bias_epochs`` epochs only (airbench94: 3). A frozen
        parameter gets no gradient, so the optimiser (which keeps it in its group) skips it."""
        self.whiten.bias.requires_grad_(epoch < self.whiten_bias_epochs)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        # checkpoints from before the whitening bias existed: a zero bias is no bias
        key = prefix + "whiten.bias"
        if key not in state_dict and prefix + "whiten.weight" in state_dict:
            state_dict[key] = torch.zeros_like(self.whiten.bias)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def init_from_data(self, images: torch.Tensor) -> None:
        """Set the frozen whitening filters from normalised images (N, C, H, W).

        The filters are the eigenvectors of the (uncentred) covariance of all 2x2 patches,
        each divided by sqrt(eigenvalue + whiten_eps), followed by their negatives: the first
        half of the outputs then has about identity covariance on these images.
        """
        weight = self.whiten.weight
        c, k = weight.shape[1], weight.shape[-1]
        if images.ndim != 4 or images.shape[1] != c or min(images.shape[-2:]) < k:
            raise CnnkitError(
                f"init_from_data needs images (N, {c}, H>={k}, W>={k}), got {tuple(images.shape)}"
            )
        d = c * k * k
        # a convolution with identity filters lays each k x k patch out along the channels
        identity = torch.eye(d, device=weight.device).reshape(d, c, k, k)
        covariance = torch.zeros(d, d, dtype=torch.float64, device=weight.device)
        count = 0
        for chunk in images.detach().split(1000):  # bounded memory for any number of images
            x = chunk.to(device=weight.device, dtype=torch.float32)
            patches = F.conv2d(x, identity).transpose(0, 1).reshape(d, -1)  # (d, n*L)
            covariance += (patches @ patches.T).double()
            count += patches.shape[1]
        covariance /= max(count, 1)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)  # ascending
        eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.flip(1)
        filters = eigenvectors.T / torch.sqrt(eigenvalues.clamp(min=0) + self.whiten_eps)[:, None]
        filters = filters.reshape(-1, c, k, k)
        weight.copy_(torch.cat([filters, -filters]).to(weight.dtype))


def _widths(value: Sequence[int] | int | str) -> tuple[int, ...]:
    """(w1, w2, ...) from a sequence or a "64,256,256" string."""
    items = value.split(",") if isinstance(value, str) else value
    try:
        widths = tuple(int(w) for w in items)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise CnnkitError(f"fastnet widths must be whole numbers, got {value!r}") from None
    if not widths or min(widths) < 1:
        raise CnnkitError(f"fastnet widths must be positive, got {value!r}")
    return widths


@register_model(
    "fastnet",
    "airbench-style fast CIFAR net: frozen patch-whitening conv, 3 conv blocks 64-256-256, "
    "BatchNorm for short runs, scaled logits (the cifar10-94 preset's)",
)
def fastnet(
    num_classes: int,
    input_size: tuple[int, int, int] = (3, 32, 32),
    widths: Sequence[int] | str = DEFAULT_WIDTHS,
    depth: int = 2,
    scale: float = 1 / 9,
    bn_momentum: float = 0.4,
    shift_lr_scale: float = 64.0,
    whiten_eps: float = 5e-4,
    whiten_bias_epochs: int = 3,
    whiten_bias_lr_scale: float = 1.0,
) -> FastNet:
    """fastnet for ``input_size`` (C, H, W): ``widths`` of the blocks, ``depth`` convs each;
    the whitening bias trains for the first ``whiten_bias_epochs`` epochs, learning
    ``whiten_bias_lr_scale`` times faster than the weights."""
    blocks = _widths(widths)
    if int(depth) < 1:
        raise CnnkitError(f"fastnet depth must be >= 1, got {depth}")
    smallest = WHITEN_KERNEL + 2 ** len(blocks) - 1
    if min(input_size[1:]) < smallest:
        raise CnnkitError(
            f"fastnet with {len(blocks)} blocks needs inputs of at least {smallest}x{smallest}"
        )
    return FastNet(
        num_classes,
        blocks,
        int(depth),
        scale=scale,
        bn_momentum=bn_momentum,
        shift_lr_scale=shift_lr_scale,
        whiten_eps=whiten_eps,
        whiten_bias_epochs=int(whiten_bias_epochs),
        in_channels=input_size[0],
        whiten_bias_lr_scale=float(whiten_bias_lr_scale),
    )


# the CPU preset's narrower widths and, as cifar10-cpu was measured, a whitening bias kept at zero
fastnet_cpu = register_model(
    "fastnet_cpu",
    f"fastnet with blocks {'-'.join(map(str, CPU_WIDTHS))}: about a fifth of the compute, "
    "for CPUs (the cifar10-cpu preset's)",
)(functools.partial(fastnet, widths=CPU_WIDTHS, whiten_bias_epochs=0))

fastnet_wide = register_model(
    "fastnet_wide",
    f"fastnet with blocks {'-'.join(map(str, WIDE_WIDTHS))}: about 2.6x the compute of fastnet "
    "(airbench95's widths, the cifar10-95 preset's)",
)(functools.partial(fastnet, widths=WIDE_WIDTHS))

# airbench94_muon trains the whitening bias at the BatchNorm shifts' rate (airbench94: the weights')
fastnet_muon = register_model(
    "fastnet_muon",
    "fastnet whose whitening bias learns as fast as its BatchNorm shifts (64x), as "
    "airbench94_muon's does (the cifar10-94-muon preset's)",
)(functools.partial(fastnet, whiten_bias_lr_scale=64.0))
