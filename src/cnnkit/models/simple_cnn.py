"""The tutorials' classic CIFAR-10 network, defined as a layer spec (see simple_cnn.yaml).

conv 32 -> pool -> conv 64 -> pool -> conv 128 -> pool -> dense 128 -> dense classes:
160,202 parameters at 3x32x32 with 10 classes, like the Keras model. It returns logits.
"""

from __future__ import annotations

from torch import nn

from cnnkit.errors import CnnkitError
from cnnkit.models.layers import build_layers, parse_layers
from cnnkit.models.registry import register_model

SIMPLE_CNN_LAYERS: tuple[str, ...] = (
    "conv2d:32:3",
    "relu",
    "maxpool2d:2",
    "conv2d:64:3",
    "relu",
    "maxpool2d:2",
    "conv2d:128:3",
    "relu",
    "maxpool2d:2",
    "flatten",
    "dense:128",
    "relu",
    "dense",  # units omitted: the number of classes
)


def simple_cnn_layers(dropout: float = 0.0) -> list[dict]:
    """The normalised layer list; ``dropout > 0`` inserts Dropout before the last dense."""
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise CnnkitError(f"simple_cnn option dropout must be a number in [0, 1), got {dropout!r}")
    layers = list(SIMPLE_CNN_LAYERS)
    if dropout:
        layers.insert(len(layers) - 1, f"dropout:{float(dropout)}")
    return parse_layers(layers)


@register_model(
    "simple_cnn",
    "the tutorials' classic CIFAR-10 CNN: 3 conv+pool blocks, dense 128 "
    "(160,202 params at 32x32, 10 classes)",
)
def simple_cnn(
    num_classes: int, input_size: tuple[int, int, int] = (3, 32, 32), dropout: float = 0.0
) -> nn.Module:
    """Build the classic network for ``input_size`` (C, H, W) and ``num_classes``."""
    return build_layers(simple_cnn_layers(dropout), input_size, num_classes)
