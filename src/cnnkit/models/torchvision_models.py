"""Every torchvision classification architecture, by name (resnet18, vgg16, inception_v3, ...).

Models are built with random weights by ``torchvision.models.get_model(name, weights=None,
num_classes=...)``; nothing is instantiated at import. With transfer options (see
``cnnkit.models.pretrained``) the model is a ``TransferModel``: the ``DEFAULT`` weights are loaded
by cnnkit (torchvision never downloads), then split into backbone and head:

- pooled features (default): the last Linear of ``fc``/``classifier``/``heads``/``head`` and a
  Dropout just before it become Identity (convnext's LayerNorm, vgg's fc6/fc7 stay);
  squeezenet's conv classifier becomes global average pooling;
- a feature map (a head starting with flatten/conv2d/pooling/dropout2d): ``.features`` (+ ReLU
  for densenet, + norm/permute for swin), maxvit's stem + blocks, mnasnet's ``layers``, else
  the children before ``avgpool`` (resnet, regnet, shufflenet, inception_v3, googlenet, with
  Google's input transform when set); vit has no feature map.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections import OrderedDict
from typing import Any

import torch
import torchvision
from torch import nn

from cnnkit.errors import CnnkitError
from cnnkit.models.pretrained import (
    TRANSFER_OPTIONS,
    google_input,
    load_torchvision_state,
    split_options,
    torchvision_weights,
    torchvision_weights_file,
    uses_weights,
    wants_transfer,
    weights_input_size,
)
from cnnkit.models.registry import register_model
from cnnkit.models.transfer import (
    TransferModel,
    blocks_from_groups,
    group_children,
    is_spatial_head,
    kept_classifier_head,
)
from cnnkit.models.weights import load_state_dict_file

# Keyword arguments cnnkit fixes for some architectures (a single logits output, explicit init).
_FIXED_KWARGS: dict[str, dict[str, Any]] = {
    "inception_v3": {"aux_logits": False, "init_weights": True},
    "googlenet": {"aux_logits": False, "init_weights": True},
}
# Below its minimum input size an architecture normally sees its native size instead.
_NATIVE_WHEN_SMALL: dict[str, int] = {"inception_v3": 299}
# Architectures built for one input size (a constructor option, 224 by default).
_FIXED_SIZE_OPTION: dict[str, str] = {"vit_": "image_size", "maxvit_": "input_size"}


def torchvision_names() -> list[str]:
    """Names of torchvision's classification models (not detection/segmentation/video)."""
    return list(torchvision.models.list_models(module=torchvision.models))


@functools.cache
def _class_options(name: str) -> tuple[str, ...] | None:
    """Constructor options of the model class, minus those cnnkit sets (None: unknown)."""
    builder = torchvision.models.get_model_builder(name)
    try:
        cls = typing.get_type_hints(builder).get("return")
    except Exception:  # unresolvable annotations in some torchvision version: do not check
        return None
    if not isinstance(cls, type):
        return None
    params = inspect.signature(cls.__init__).parameters.values()
    taken = {"self", "num_classes", *_FIXED_KWARGS.get(name, {}), *TRANSFER_OPTIONS}
    own = tuple(
        p.name
        for p in params
        if p.name not in taken and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    )
    return own + TRANSFER_OPTIONS


@functools.cache
def min_input_size(name: str) -> tuple[int, int]:
    """The smallest (H, W) torchvision documents for the architecture (weights meta min_size)."""
    try:
        weights = torchvision.models.get_model_weights(name)
    except (ValueError, KeyError):
        return (1, 1)
    sizes = [w.meta.get("min_size", (1, 1)) for w in weights]
    return (max(s[0] for s in sizes), max(s[1] for s in sizes)) if sizes else (1, 1)


def _fixed_size(name: str, options: dict) -> tuple[int, int] | None:
    for prefix, option in _FIXED_SIZE_OPTION.items():
        if name.startswith(prefix):
            size = options.get(option, 224)
            return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    return None


def _input_size(name: str, data: tuple[int, int], options: dict) -> tuple[int, int]:
    fixed = _fixed_size(name, options)
    if fixed is not None:
        return fixed
    wanted = weights_input_size(name, options)
    if wanted is not None:
        return wanted
    low = min_input_size(name)
    if data[0] >= low[0] and data[1] >= low[1]:
        return data
    if name in _NATIVE_WHEN_SMALL:
        return (_NATIVE_WHEN_SMALL[name],) * 2
    return (max(data[0], low[0]), max(data[1], low[1]))


def _build(
    name: str, num_classes: int, input_size: tuple[int, int, int], /, **options: Any
) -> nn.Module:
    if input_size[0] != 3:
        raise CnnkitError(f"{name} expects 3-channel images, got input_size {tuple(input_size)}")
    if wants_transfer(options):
        return _build_transfer(name, num_classes, input_size, options)
    _, rest = split_options(options, keep_input_size=name.startswith("maxvit_"))
    return _construct(name, num_classes, {**_FIXED_KWARGS.get(name, {}), **rest})


def _construct(name: str, num_classes: int, kwargs: dict) -> nn.Module:
    try:
        return torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
    except TypeError as e:  # an option the constructor rejects
        raise CnnkitError(f"model '{name}': {e}") from None


class GoogleInput(nn.Module):
    """inception_v3 / googlenet ``transform_input``: ImageNet- to Google-normalised input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [
                x[:, 0:1] * (0.229 / 0.5) + (0.485 - 0.5) / 0.5,
                x[:, 1:2] * (0.224 / 0.5) + (0.456 - 0.5) / 0.5,
                x[:, 2:3] * (0.225 / 0.5) + (0.406 - 0.5) / 0.5,
            ],
            1,
        )


def _remove_classifier(model: nn.Module, name: str) -> tuple[nn.Linear | None, float]:
    """Make the model return pooled features: its last Linear (and a Dropout just before it)
    become Identity. Returns (that Linear, the dropout rate removed)."""
    for attr in ("fc", "classifier", "heads", "head"):
        module = getattr(model, attr, None)
        if isinstance(module, nn.Linear):
            setattr(model, attr, nn.Identity())
            drop = getattr(model, "dropout", None)
            if isinstance(drop, nn.Dropout):  # inception_v3, googlenet
                model.dropout = nn.Identity()
                return module, drop.p
            return module, 0.0
        if isinstance(module, nn.Sequential):
            linears = [i for i, m in enumerate(module) if isinstance(m, nn.Linear)]
            if linears:
                i = linears[-1]
                linear, p = module[i], 0.0
                module[i] = nn.Identity()
                if i > 0 and isinstance(module[i - 1], nn.Dropout):
                    p = module[i - 1].p
                    module[i - 1] = nn.Identity()
                return linear, p
            if any(isinstance(m, nn.Conv2d) for m in module):  # squeezenet: conv classifier
                setattr(model, attr, nn.Sequential(nn.AdaptiveAvgPool2d((1, 1))))
                return None, 0.0
    raise CnnkitError(f"cannot find the classifier of {name} to replace")


def _feature_map(model: nn.Module, name: str) -> nn.Module:
    """The part of the model that ends with the last feature map (N, C, H, W)."""
    tv = torchvision.models
    parts: OrderedDict[str, nn.Module] = OrderedDict()
    if isinstance(model, tv.VisionTransformer):
        raise CnnkitError(
            f"{name} has no feature map for a spatial head (flatten/conv2d/pooling); "
            f"use a head that starts with dense or dropout on its pooled features"
        )
    if isinstance(model, tv.SwinTransformer):
        parts.update(features=model.features, norm=model.norm, permute=model.permute)
    elif isinstance(model, tv.MaxVit):
        parts.update(stem=model.stem, blocks=nn.Sequential(*model.blocks))
    elif isinstance(model, tv.MNASNet):
        parts.update(layers=model.layers)
    elif isinstance(getattr(model, "features", None), nn.Module):
        parts.update(features=model.features)
        if isinstance(model, tv.DenseNet):
            parts.update(relu=nn.ReLU())
    else:
        if getattr(model, "transform_input", False):
            parts.update(transform_input=GoogleInput())
        for child_name, child in model.named_children():
            if child_name in ("avgpool", "fc", "dropout", "classifier"):
                break
            parts[child_name] = child
    return nn.Sequential(parts)


_EXPAND = frozenset(
    {"features", "trunk_output", "layers", "encoder", "blocks", "classifier", "heads"}
)


def _flat_children(module: nn.Module) -> list[nn.Module]:
    """Children in order, with stage containers (features, layers, ...) opened up."""
    items: list[nn.Module] = []
    for child_name, child in module.named_children():
        if child_name in _EXPAND and next(child.children(), None) is not None:
            items.extend(_flat_children(child))
        else:
            items.append(child)
    return items


def _build_transfer(
    name: str, num_classes: int, shape: tuple[int, int, int], options: dict
) -> TransferModel:
    ours, rest = split_options(options, keep_input_size=name.startswith("maxvit_"))
    weights = torchvision_weights(name)
    kwargs = {**_FIXED_KWARGS.get(name, {}), **rest}
    if google_input(name, options):
        kwargs["transform_input"] = True
    model = _construct(name, len(weights.meta["categories"]), kwargs)
    if uses_weights(ours):
        path = torchvision_weights_file(name, ours.get("weights"))
        load_torchvision_state(model, load_state_dict_file(path), name, path)
    head = ours.get("head")
    keep = bool(ours.get("keep_classifier"))
    spatial = is_spatial_head(head)
    linear = None
    if spatial:
        backbone = _feature_map(model, name)
    else:
        linear, p = _remove_classifier(model, name)
        backbone = model
        if keep:
            head = kept_classifier_head(linear, num_classes, p)
    blocks = blocks_from_groups(backbone, group_children(_flat_children(backbone)))
    return TransferModel(
        backbone,
        head,
        num_classes,
        shape,
        blocks=blocks,
        pooled=not spatial,
        kept_classifier=linear if keep else None,
    )


def _family(name: str) -> str:
    """The torchvision module defining the architecture (resnet, mobilenetv3, ...)."""
    module = getattr(torchvision.models.get_model_builder(name), "__module__", "") or ""
    return module.rsplit(".", 1)[-1] or name


for _name in torchvision_names():
    register_model(
        _name,
        f"torchvision {_family(_name)} classification architecture",
        options=functools.partial(_class_options, _name),
        input_size=functools.partial(_input_size, _name),
    )(functools.partial(_build, _name))
