"""The layer types of cnnkit layer specs: their arguments (checked by layer_args) and builders.

Each ``LayerType`` lists its arguments in positional order (``conv2d:32:3`` = filters 32,
kernel 3) with a default and a check, and builds ``(args, input shape) -> (module, output
shape)``; shapes are (C, H, W) for images and (F,) for flat features, without the batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cnnkit.models import layer_args as arg

Shape = tuple[int, ...]  # (C, H, W) for images, (F,) for flat features (no batch dimension)
REQUIRED = object()  # marks an argument without a default


class ShapeError(Exception):
    """A layer cannot take the current shape; build_layers adds the layer's position."""


class GlobalAvgPool2d(nn.Module):
    """(N, C, H, W) -> (N, C): mean over the spatial dimensions (Keras GlobalAveragePooling2D)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(-2, -1))


class GlobalMaxPool2d(nn.Module):
    """(N, C, H, W) -> (N, C): max over the spatial dimensions (Keras GlobalMaxPooling2D)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax(dim=(-2, -1))


# ---- shape-aware builders: (args, input shape) -> (module or None, output shape) ----


def _image(shape: Shape, kind: str) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise ShapeError(
            f"{kind} needs an image input (C, H, W) but gets flat features {shape}; "
            f"move it before flatten/global pooling"
        )
    return shape  # type: ignore[return-value]


def _check_fits(kind: str, k: tuple[int, int], h: int, w: int, pad: tuple[int, int]) -> None:
    if h + 2 * pad[0] < k[0] or w + 2 * pad[1] < k[1]:
        raise ShapeError(
            f"{kind} kernel {arg.size_text(list(k))} on a {h}x{w} input: the image has shrunk "
            f"too much (use padding 'same', fewer pooling layers or a larger input size)"
        )


def _conv2d(a: dict, shape: Shape) -> tuple[nn.Module, Shape]:
    c, h, w = _image(shape, "conv2d")
    k, s = arg.hw(a["kernel"]), arg.hw(a["stride"])
    if a["padding"] == "same":
        if s == (1, 1):
            pad: Any = "same"
            out = (h, w)
        elif k[0] % 2 and k[1] % 2:
            pad = (k[0] // 2, k[1] // 2)
            out = (math.ceil(h / s[0]), math.ceil(w / s[1]))
        else:
            raise ShapeError("conv2d padding 'same' with a stride > 1 needs an odd kernel size")
    else:
        pad = (0, 0) if a["padding"] == "valid" else arg.hw(a["padding"])
        _check_fits("conv2d", k, h, w, pad)
        out = ((h + 2 * pad[0] - k[0]) // s[0] + 1, (w + 2 * pad[1] - k[1]) // s[1] + 1)
    conv = nn.Conv2d(c, a["filters"], k, stride=s, padding=pad, bias=a["bias"])
    return conv, (a["filters"], *out)


def _transpose_padding(k: int, s: int) -> tuple[int, int]:
    """(padding, output_padding) that make a transposed convolution multiply the size by s."""
    if k < s:
        return 0, s - k
    pad = (k - s + 1) // 2
    extra = 2 * pad - (k - s)
    if extra >= s:  # stride 1 and an even kernel: no output_padding can fix it
        raise ShapeError("conv_transpose2d padding 'same' with stride 1 needs an odd kernel size")
    return pad, extra


def _conv_transpose2d(a: dict, shape: Shape) -> tuple[nn.Module, Shape]:
    c, h, w = _image(shape, "conv_transpose2d")
    k, s = arg.hw(a["kernel"]), arg.hw(a["stride"])
    padding = a.get("padding", "valid")  # checkpoints from before padding existed lack it
    if padding == "same":  # (H, W) -> (H * stride, W * stride), as Keras' Conv2DTranspose
        (ph, eh), (pw, ew) = _transpose_padding(k[0], s[0]), _transpose_padding(k[1], s[1])
        pad, extra = (ph, pw), (eh, ew)
    else:
        pad, extra = (0, 0) if padding == "valid" else arg.hw(padding), (0, 0)
    out = (
        (h - 1) * s[0] - 2 * pad[0] + k[0] + extra[0],
        (w - 1) * s[1] - 2 * pad[1] + k[1] + extra[1],
    )
    if min(out) < 1:
        raise ShapeError(
            f"conv_transpose2d kernel {arg.size_text(list(k))} with padding "
            f"{arg.size_text(list(pad))} on a {h}x{w} input leaves no output; use less padding"
        )
    conv = nn.ConvTranspose2d(
        c, a["filters"], k, stride=s, padding=pad, output_padding=extra, bias=a["bias"]
    )
    return conv, (a["filters"], *out)


class Reshape(nn.Module):
    """(N, ...) -> (N, C, H, W): flat features (a generator's dense layer) to feature maps."""

    def __init__(self, shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.shape = shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.shape)

    def extra_repr(self) -> str:
        return f"shape={self.shape}"


def _reshape(a: dict, shape: Shape) -> tuple[nn.Module, Shape]:
    wanted = (a["channels"], a["height"], a["width"])
    if math.prod(wanted) != math.prod(shape):
        raise ShapeError(
            f"reshape to {wanted} needs {math.prod(wanted)} values but gets {shape} = "
            f"{math.prod(shape)}"
        )
    return Reshape(wanted), wanted


def _upsample(a: dict, shape: Shape) -> tuple[nn.Module, Shape]:
    c, h, w = _image(shape, "upsample")
    f = arg.hw(a["factor"])
    align = False if a["mode"] == "bilinear" else None
    layer = nn.Upsample(scale_factor=f, mode=a["mode"], align_corners=align)
    return layer, (c, h * f[0], w * f[1])


def _pool(cls: type[nn.Module], kind: str) -> Callable[[dict, Shape], tuple[nn.Module, Shape]]:
    def build(a: dict, shape: Shape) -> tuple[nn.Module, Shape]:
        c, h, w = _image(shape, kind)
        k = arg.hw(a["size"])
        s = k if a["stride"] is None else arg.hw(a["stride"])
        ceil = a["padding"] == "same"
        if ceil and s != k:
            raise ShapeError(f"{kind} padding 'same' needs stride equal to size")
        pad = (0, 0) if a["padding"] in ("valid", "same") else arg.hw(a["padding"])
        if pad[0] * 2 > k[0] or pad[1] * 2 > k[1]:
            raise ShapeError(f"{kind} padding must be at most half the pool size")
        if ceil:
            out = (math.ceil(h / s[0]), math.ceil(w / s[1]))
        else:
            _check_fits(kind, k, h, w, pad)
            out = ((h + 2 * pad[0] - k[0]) // s[0] + 1, (w + 2 * pad[1] - k[1]) // s[1] + 1)
        return cls(k, stride=s, padding=pad, ceil_mode=ceil), (c, *out)

    return build


def _global(cls: type[nn.Module], kind: str) -> Callable[[dict, Shape], tuple[nn.Module, Shape]]:
    def build(a: dict, shape: Shape) -> tuple[nn.Module, Shape]:
        return cls(), (_image(shape, kind)[0],)

    return build


def _dense(a: dict, shape: Shape) -> tuple[nn.Module, Shape]:
    if len(shape) != 1:
        raise ShapeError(
            f"dense needs flat features but gets an image {shape}; "
            f"add flatten or global_avg_pool before dense"
        )
    return nn.Linear(shape[0], a["units"], bias=a["bias"]), (a["units"],)


def _batchnorm(a: dict, shape: Shape) -> tuple[nn.Module, Shape]:
    bn = nn.BatchNorm2d if len(shape) == 3 else nn.BatchNorm1d
    return bn(shape[0], eps=a["eps"], momentum=a["momentum"]), shape


def _flatten(a: dict, shape: Shape) -> tuple[nn.Module, Shape]:
    return nn.Flatten(), (math.prod(shape),)


def _dropout2d(a: dict, shape: Shape) -> tuple[nn.Module, Shape]:
    _image(shape, "dropout2d")
    return nn.Dropout2d(a["rate"]), shape


def _same(factory: Callable[[dict], nn.Module | None]) -> Callable:
    def build(a: dict, shape: Shape) -> tuple[nn.Module | None, Shape]:
        return factory(a), shape

    return build


@dataclass(frozen=True)
class LayerType:
    """One layer type: its arguments (positional order = declaration order) and its builder."""

    name: str
    description: str
    params: tuple[tuple[str, Any, Callable[[Any], Any]], ...]  # (name, default or REQUIRED, check)
    build: Callable[[dict, Shape], tuple[nn.Module | None, Shape]]
    aliases: tuple[str, ...] = ()
    takes_activation: bool = False  # accepts activation=NAME, expanded into a separate layer

    @property
    def param_names(self) -> list[str]:
        return [p[0] for p in self.params]


_POOL_PARAMS = (
    ("size", 2, arg.pair),
    ("stride", None, arg.optional_pair),
    ("padding", "valid", arg.padding),
)
_TYPES = [
    LayerType(
        "conv2d",
        "2D convolution; input channels inferred; padding valid (default), same or an integer",
        (
            (
                "filters",
                None,
                arg.optional_positive_int,
            ),  # None only on a segmenter's last conv2d (classes)
            ("kernel", 3, arg.pair),
            ("stride", 1, arg.pair),
            ("padding", "valid", arg.padding),
            ("bias", True, arg.boolean),
        ),
        _conv2d,
        ("conv", "convolution2d"),
        True,
    ),
    LayerType(
        "conv_transpose2d",
        "transposed convolution (learned upsampling); stride 2 and kernel 2 (or padding same) "
        "double H and W; an integer padding crops (kernel 4, stride 2, padding 1 doubles)",
        (
            ("filters", REQUIRED, arg.positive_int),
            ("kernel", 2, arg.pair),
            ("stride", 2, arg.pair),
            ("padding", "valid", arg.padding),
            ("bias", True, arg.boolean),
        ),
        _conv_transpose2d,
        ("conv2dtranspose", "deconv", "convtranspose2d"),
        True,
    ),
    LayerType(
        "upsample",
        "resize feature maps by an integer factor (nearest or bilinear)",
        (("factor", 2, arg.pair), ("mode", "bilinear", arg.upsample_mode)),
        _upsample,
        ("upsampling2d", "upsample2d"),
    ),
    LayerType(
        "dense",
        "fully connected; input features inferred; units omitted on the last dense = classes",
        (("units", None, arg.optional_positive_int), ("bias", True, arg.boolean)),
        _dense,
        ("linear", "fc"),
        True,
    ),
    LayerType(
        "maxpool2d",
        "max pooling (stride defaults to size)",
        _POOL_PARAMS,
        _pool(nn.MaxPool2d, "maxpool2d"),
        ("maxpooling2d", "max_pool2d", "maxpool"),
    ),
    LayerType(
        "avgpool2d",
        "average pooling (stride defaults to size)",
        _POOL_PARAMS,
        _pool(nn.AvgPool2d, "avgpool2d"),
        ("averagepooling2d", "avg_pool2d", "avgpool"),
    ),
    LayerType(
        "global_avg_pool",
        "mean over H and W: (C, H, W) -> (C,)",
        (),
        _global(GlobalAvgPool2d, "global_avg_pool"),
        ("globalaveragepooling2d", "global_average_pooling2d", "gap"),
    ),
    LayerType(
        "global_max_pool",
        "max over H and W: (C, H, W) -> (C,)",
        (),
        _global(GlobalMaxPool2d, "global_max_pool"),
        ("globalmaxpooling2d", "global_max_pooling2d"),
    ),
    LayerType(
        "batchnorm",
        "batch normalisation (2d or 1d from the input shape; channels inferred)",
        (("momentum", 0.1, arg.number), ("eps", 1e-5, arg.number)),
        _batchnorm,
        ("batchnormalization", "batch_norm", "batchnorm2d", "bn"),
    ),
    LayerType(
        "dropout",
        "dropout (rate = fraction dropped)",
        (("rate", 0.5, arg.rate),),
        _same(lambda a: nn.Dropout(a["rate"])),
    ),
    LayerType(
        "dropout2d",
        "channel dropout on images",
        (("rate", 0.5, arg.rate),),
        _dropout2d,
        ("spatialdropout2d",),
    ),
    LayerType("flatten", "(C, H, W) -> (C*H*W,)", (), _flatten),
    LayerType(
        "reshape",
        "features -> (channels, height, width) of the same count, e.g. after a generator's dense",
        (
            ("channels", REQUIRED, arg.positive_int),
            ("height", REQUIRED, arg.positive_int),
            ("width", REQUIRED, arg.positive_int),
        ),
        _reshape,
        ("unflatten",),
    ),
    LayerType("relu", "ReLU activation", (), _same(lambda a: nn.ReLU())),
    LayerType("gelu", "GELU activation", (), _same(lambda a: nn.GELU())),
    LayerType("silu", "SiLU (swish) activation", (), _same(lambda a: nn.SiLU()), ("swish",)),
    LayerType("elu", "ELU activation", (), _same(lambda a: nn.ELU())),
    LayerType(
        "leaky_relu",
        "leaky ReLU activation",
        (("negative_slope", 0.01, arg.number),),
        _same(lambda a: nn.LeakyReLU(a["negative_slope"])),
        ("leakyrelu",),
    ),
    LayerType("sigmoid", "sigmoid activation", (), _same(lambda a: nn.Sigmoid())),
    LayerType("tanh", "tanh activation", (), _same(lambda a: nn.Tanh())),
    LayerType("identity", "no-op", (), _same(lambda a: nn.Identity())),
    LayerType(
        "softmax",
        "last layer only; kept in the spec but not in the module (the model returns logits)",
        (),
        _same(lambda a: None),
    ),
]
LAYER_TYPES: dict[str, LayerType] = {t.name: t for t in _TYPES}
ALIASES: dict[str, str] = {a: t.name for t in _TYPES for a in (t.name, *t.aliases)}
ACTIVATIONS = {"relu", "gelu", "silu", "elu", "leaky_relu", "sigmoid", "tanh", "softmax"}
