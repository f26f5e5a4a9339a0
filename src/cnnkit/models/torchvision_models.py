"""Every torchvision classification architecture, by name (resnet18, vgg16, inception_v3, ...).

Models are built with random weights by ``torchvision.models.get_model(name, weights=None,
num_classes=...)``; nothing is instantiated at import. Pretrained weights would come in through
``_weights`` (today always None).
"""

from __future__ import annotations

import functools
import inspect
import typing
from typing import Any

import torchvision
from torch import nn

from cnnkit.errors import CnnkitError
from cnnkit.models.registry import register_model

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
    taken = {"self", "num_classes", *_FIXED_KWARGS.get(name, {})}
    return tuple(
        p.name
        for p in params
        if p.name not in taken and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    )


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
    low = min_input_size(name)
    if data[0] >= low[0] and data[1] >= low[1]:
        return data
    if name in _NATIVE_WHEN_SMALL:
        return (_NATIVE_WHEN_SMALL[name],) * 2
    return (max(data[0], low[0]), max(data[1], low[1]))


def _weights(name: str, pretrained: bool) -> Any:
    """The weights enum to load; pretrained weights are not wired in yet."""
    if pretrained:
        raise CnnkitError(f"pretrained weights for '{name}' are not supported yet")
    return None


def _build(
    name: str, num_classes: int, input_size: tuple[int, int, int], **options: Any
) -> nn.Module:
    if input_size[0] != 3:
        raise CnnkitError(f"{name} expects 3-channel images, got input_size {tuple(input_size)}")
    kwargs = {**_FIXED_KWARGS.get(name, {}), **options}
    try:
        return torchvision.models.get_model(
            name, weights=_weights(name, False), num_classes=num_classes, **kwargs
        )
    except TypeError as e:  # an option the constructor rejects
        raise CnnkitError(f"model '{name}': {e}") from None


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
