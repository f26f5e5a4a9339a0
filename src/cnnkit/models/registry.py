"""Model registry: name -> builder, ``create_model``, ``resolve_spec``, ``list_models``.

A builder is ``fn(num_classes, input_size, **options) -> nn.Module`` registered with
``@register_model(name, description)``. Name families such as ``timm:NAME`` are registered with
``register_family``. The built-in modules (simple_cnn, torchvision_models, timm_models) are
imported by ``cnnkit.models.__init__``, so importing ``cnnkit.models`` registers everything.
Builders name their first two parameters positional-only, so an ``input_size`` *option* (the
model's input size, see ``cnnkit.models.pretrained``) never collides with them.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from cnnkit.errors import CnnkitError, did_you_mean
from cnnkit.models.layers import build_layers, load_layers_file, parse_layers
from cnnkit.models.spec import LAYERS, ModelSpec

Size2 = tuple[int, int]
InputSizeFn = Callable[[Size2, dict], Size2]  # (data (H, W), options) -> model (H, W)


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: its builder, one-line description and input-size policy."""

    name: str
    description: str
    builder: Callable[..., nn.Module]
    options: Callable[[], Iterable[str] | None] | None = None  # valid names; None: from signature
    input_size: InputSizeFn | None = None  # None: the model takes the data's size


@dataclass(frozen=True)
class ModelFamily:
    """Models named ``PREFIX:NAME`` (e.g. ``timm:resnet18``), built by an external library."""

    prefix: str
    builder: Callable[..., nn.Module]  # (name, num_classes, input_size, **options)
    check: Callable[[str], None]  # raises CnnkitError for an unknown name / missing library
    input_size: Callable[[str, Size2, dict], Size2]


_MODELS: dict[str, ModelEntry] = {}
_FAMILIES: dict[str, ModelFamily] = {}


def register_model(
    name: str,
    description: str,
    *,
    options: Callable[[], Iterable[str] | None] | None = None,
    input_size: InputSizeFn | None = None,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering ``fn(num_classes, input_size, **options) -> nn.Module`` as ``name``."""

    def decorate(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _MODELS or name == LAYERS or ":" in name:
            raise ValueError(f"model name {name!r} is taken or reserved")
        _MODELS[name] = ModelEntry(name, description, fn, options, input_size)
        return fn

    return decorate


def register_family(family: ModelFamily) -> None:
    """Register a ``PREFIX:NAME`` family of models."""
    if family.prefix in _FAMILIES:
        raise ValueError(f"model family {family.prefix!r} registered twice")
    _FAMILIES[family.prefix] = family


def list_models() -> list[tuple[str, str]]:
    """(name, one-line description) of every registered model, built-ins first."""
    return [(e.name, e.description) for e in _MODELS.values()]


def _entry(name: str) -> ModelEntry:
    if name not in _MODELS:
        raise did_you_mean("model", name, _MODELS)
    return _MODELS[name]


def _family(name: str) -> tuple[ModelFamily, str] | None:
    prefix, sep, rest = name.partition(":")
    if sep and prefix.lower() in _FAMILIES:
        if not rest:
            raise CnnkitError(f"'{name}' needs a model name after '{prefix}:'")
        return _FAMILIES[prefix.lower()], rest
    return None


def _valid_options(entry: ModelEntry) -> list[str] | None:
    if entry.options is not None:
        names = entry.options()
        return None if names is None else sorted(names)
    params = list(inspect.signature(entry.builder).parameters.values())[2:]
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _check_spec(spec: ModelSpec) -> None:
    """Raise CnnkitError if ``spec`` names an unknown model or options it does not take."""
    if not isinstance(spec.options, dict):
        raise CnnkitError(f"model options must be a mapping, got {spec.options!r}")
    if spec.name == LAYERS:
        if not spec.layers:
            raise CnnkitError("a layer-spec model needs a non-empty layer list")
        if spec.options:
            raise CnnkitError(
                f"a layer-spec model takes no options (got {', '.join(spec.options)}); "
                f"put such layers (e.g. dropout) in the layer list"
            )
        return
    fam = _family(spec.name)
    if fam is not None:
        fam[0].check(fam[1])
        return
    entry = _entry(spec.name)
    valid = _valid_options(entry)
    if valid is None:
        return
    for key in spec.options:
        if key not in valid:
            raise CnnkitError(
                f"model '{spec.name}' has no option '{key}' "
                f"(valid: {', '.join(valid) if valid else 'none'})"
            )


def _is_yaml_path(model: Any) -> bool:
    if isinstance(model, os.PathLike):
        return True
    return isinstance(model, str) and model.strip().lower().endswith((".yaml", ".yml"))


def resolve_spec(
    model: str | os.PathLike | list | ModelSpec | Mapping, **options: Any
) -> ModelSpec:
    """Turn what a user wrote into a checked ``ModelSpec``.

    ``"simple_cnn"`` / ``"resnet18"``: a registered model; ``"timm:NAME"``: a timm model; a path
    to a ``.yaml``/``.yml`` file, a ``"conv2d:32:3,relu,...,dense"`` string or a Python list: a
    layer-spec model; a ``ModelSpec`` or its ``to_dict()``: copied. ``options`` are builder
    options (e.g. ``dropout=0.5``) merged over the spec's own.
    """
    if isinstance(model, ModelSpec):
        spec = ModelSpec.from_dict(model.to_dict())
    elif isinstance(model, Mapping) and "name" in model:
        spec = ModelSpec.from_dict(dict(model))
    elif _is_yaml_path(model):
        spec = ModelSpec(LAYERS, load_layers_file(Path(model)))
    elif isinstance(model, (list, tuple, Mapping)):
        spec = ModelSpec(LAYERS, parse_layers(model))
    elif isinstance(model, str):
        name = model.strip()
        if name.lower() in _MODELS:
            spec = ModelSpec(name.lower())
        elif _family(name) is not None or name == LAYERS:
            spec = ModelSpec(name)
        elif "," in name or ":" in name:
            spec = ModelSpec(LAYERS, parse_layers(name))
        elif name and Path(name).is_file():
            spec = ModelSpec(LAYERS, load_layers_file(name))
        else:
            raise did_you_mean("model", name, _MODELS)
    else:
        raise CnnkitError(f"cannot make a model from {type(model).__name__}: {model!r:.100}")
    if spec.name == LAYERS and spec.layers:
        spec.layers = parse_layers(spec.layers)
    spec.options.update(options)
    _check_spec(spec)
    return spec


def _check_sizes(num_classes: int, input_size: tuple[int, int, int]) -> tuple[int, int, int]:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise CnnkitError(f"num_classes must be a positive integer, got {num_classes!r}")
    try:
        size = tuple(int(d) for d in input_size)
    except (TypeError, ValueError):
        size = ()
    if len(size) != 3 or min(size) < 1:
        raise CnnkitError(f"input_size must be (C, H, W) with positive sizes, got {input_size!r}")
    return size  # type: ignore[return-value]


def create_model(
    spec: ModelSpec | str | os.PathLike | list,
    num_classes: int,
    input_size: tuple[int, int, int] = (3, 32, 32),
) -> nn.Module:
    """Build the module that ``spec`` describes; it returns ``num_classes`` logits.

    Random init, unless transfer options (``pretrained``, ``weights``, ``head``, ``transfer``,
    ``keep_classifier``; see ``cnnkit.models.pretrained``) make it a ``TransferModel``.
    """
    spec = resolve_spec(spec)
    input_size = _check_sizes(num_classes, input_size)
    if spec.name == LAYERS:
        return build_layers(spec.layers or [], input_size, num_classes)
    fam = _family(spec.name)
    if fam is not None:
        return fam[0].builder(fam[1], num_classes, input_size, **spec.options)
    return _entry(spec.name).builder(num_classes, input_size, **spec.options)


def model_input_size(spec: ModelSpec | str, data_size: tuple[int, int]) -> tuple[int, int]:
    """The (H, W) the model should see: the data's size unless the architecture needs another,
    the pretrained weights' own size (``pretrained``/``weights``), or an ``input_size`` option."""
    spec = spec if isinstance(spec, ModelSpec) else resolve_spec(spec)
    data = (int(data_size[0]), int(data_size[1]))
    if spec.name == LAYERS:
        return data
    fam = _family(spec.name)
    if fam is not None:
        return fam[0].input_size(fam[1], data, spec.options)
    entry = _entry(spec.name)
    return entry.input_size(data, spec.options) if entry.input_size else data
