"""Which layer a class activation map reads: found by running the model once.

Grad-CAM and its relatives need the last feature map that still has a spatial layout. Rather
than a table per architecture, one dummy forward pass records every module's output in the
order the modules finish; the target is the last module to finish with a 4-D output larger
than 1 x 1 (for a container, the whole stage: ``layer4`` of a ResNet, ``features`` of a
MobileNet, a transfer model's backbone). That works for any network built of modules: cnnkit's
layer specs, simple_cnn, fastnet, torchvision, timm, EfficientNet-Lite0 and transfer models.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnkit.errors import CnnkitError, did_you_mean


def _spatial_outputs(model: nn.Module, input_size: tuple[int, int, int]) -> list[tuple[str, tuple]]:
    """(module name, output shape) of every module with a 4-D output, in finishing order."""
    seen: list[tuple[str, tuple]] = []
    hooks = []
    for name, module in model.named_modules():
        if not name:
            continue

        def record(_module, _inputs, output, name=name) -> None:
            if isinstance(output, torch.Tensor) and output.ndim == 4:
                seen.append((name, tuple(output.shape)))

        hooks.append(module.register_forward_hook(record))
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        with torch.no_grad():
            model(torch.zeros(1, *input_size, device=device))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return seen


def find_target_layer(
    model: nn.Module, input_size: tuple[int, int, int], name: str = "auto"
) -> tuple[str, nn.Module]:
    """The (name, module) a CAM reads: ``name`` itself, or with "auto" the last module to
    output a feature map larger than 1 x 1 (before a last pooling layer)."""
    modules = dict(model.named_modules())
    if name != "auto":
        if name not in modules or not name:
            raise did_you_mean("layer", name, conv_layer_names(model, input_size))
        return name, modules[name]
    spatial = [(n, s) for n, s in _spatial_outputs(model, input_size) if s[2] * s[3] > 1]
    if not spatial:
        raise CnnkitError(
            f"{type(model).__name__} has no convolutional feature map to explain"
            " (no layer gives a spatial output)"
        )
    pools = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
    chosen = spatial[-1][0]
    for candidate, _ in reversed(spatial):  # a last pooling layer only coarsens the map
        if not isinstance(modules[candidate], pools):
            chosen = candidate
            break
    return chosen, modules[chosen]


def conv_layer_names(model: nn.Module, input_size: tuple[int, int, int]) -> list[str]:
    """Names of the modules with a spatial output, in the order they run (--layer's choices)."""
    return list(dict.fromkeys(n for n, _ in _spatial_outputs(model, input_size)))


def first_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    """The first Conv2d the model defines (its filters look at the pixels)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return name, module
    raise CnnkitError(f"{type(model).__name__} has no convolution layer")


def backbone_layer(
    model: nn.Module,
    input_size: tuple[int, int, int],
    backbones: tuple[str, ...],
    name: str = "auto",
) -> tuple[str, nn.Module]:
    """The (name, module) a detector's or segmenter's CAM reads: ``name`` itself, or with
    "auto" the backbone's last feature stage: the last module under the first of ``backbones``
    the model has to output one feature map (a detector's C5, which every pyramid level reads;
    a segmenter's last backbone stage). A model with none of them (a layer-spec FCN) gets its
    deepest map: the last module at the smallest spatial size."""
    spatial = _spatial_outputs(model, input_size)
    modules = dict(model.named_modules())
    if name != "auto":
        _check_named_layer(name, modules, spatial)
        return name, modules[name]
    for prefix in backbones:
        if prefix in modules:
            inside = [n for n, _ in spatial if n.startswith(prefix + ".") or n == prefix]
            if inside:
                return inside[-1], modules[inside[-1]]
    if not spatial:
        raise CnnkitError(f"{type(model).__name__} has no convolutional feature map to explain")
    smallest = min(s[2] * s[3] for _, s in spatial)
    deepest = [n for n, s in spatial if s[2] * s[3] == smallest]
    return deepest[-1], modules[deepest[-1]]


def _check_named_layer(name: str, modules: dict, spatial: list[tuple[str, tuple]]) -> None:
    """A --layer must exist, give one (N, C, H, W) tensor and run once per image: a CAM reads
    one activation and its gradient (a dict of pyramid levels, or a head shared by the levels,
    has no single map)."""
    names = list(dict.fromkeys(n for n, _ in spatial))
    if not name or name not in modules:
        raise did_you_mean("layer", name, names)
    runs = sum(n == name for n, _ in spatial)
    if runs == 0:
        raise CnnkitError(
            f"layer '{name}' gives no single feature map (its output is not one (N, C, H, W)"
            " tensor): name one of its parts"
        )
    if runs > 1:
        raise CnnkitError(
            f"layer '{name}' runs {runs} times per image (once per pyramid level): name a layer"
            " that runs once, such as one of the backbone's stages"
        )
