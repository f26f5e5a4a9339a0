"""Keras-like layer specs: layers from YAML, Python or "conv2d:32:3,relu,..." -> nn.Sequential.

Shapes are tracked analytically from the input size, so a layer only names what Keras would ask
for: ``conv2d`` needs ``filters``, ``dense`` needs ``units`` (and the last ``dense`` may omit it to
get the number of classes); input channels and features are inferred. Mistakes (unknown type, bad
argument, a shape that collapses) raise a one-line ``CnnkitError`` naming the layer.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from cnnkit.errors import CnnkitError, did_you_mean
from cnnkit.models.layer_types import (
    ACTIVATIONS,
    ALIASES,
    LAYER_TYPES,
    REQUIRED,
    LayerType,
    Shape,
    ShapeError,
)

__all__ = [
    "LAYER_TYPES",
    "LayerType",
    "build_layers",
    "build_sequence",
    "load_layers_file",
    "parse_layers",
]


# ---- parsing: any accepted format -> normalised list of dicts ----


def _scalar(text: str) -> Any:
    text = text.strip()
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, (int, float, bool, type(None))):
        return value
    try:
        return float(text)  # YAML 1.1 reads 1e-3 as a string
    except ValueError:
        return text


def _split_string(item: str) -> tuple[str, list, dict]:
    name, *parts = item.split(":")
    args, kwargs = [], {}
    for part in parts:
        if "=" in part:
            key, _, value = part.partition("=")
            kwargs[key.strip()] = _scalar(value)
        else:
            args.append(_scalar(part))
    return name, args, kwargs


def _split_item(item: Any, where: str) -> tuple[str, list, dict]:
    if isinstance(item, str):
        return _split_string(item)
    if isinstance(item, Mapping):
        if "type" in item:
            return str(item["type"]), [], {k: v for k, v in item.items() if k != "type"}
        if len(item) == 1:
            ((name, value),) = item.items()
            if value is None:
                return str(name), [], {}
            if isinstance(value, Mapping):
                return str(name), [], dict(value)
            if isinstance(value, (list, tuple)):
                return str(name), list(value), {}
            return str(name), [value], {}
        raise CnnkitError(
            f"{where}: a layer dict needs a 'type' key or one key naming the type, got {item}"
        )
    raise CnnkitError(f"{where}: a layer must be a string or a dict, got {item!r}")


def _normalise(name: str, args: list, kwargs: dict, where: str) -> list[dict]:
    key = name.strip().lower()
    if key not in ALIASES:
        raise CnnkitError(f"{where}: {did_you_mean('layer type', key, LAYER_TYPES)}")
    lt = LAYER_TYPES[ALIASES[key]]
    names = lt.param_names
    if len(args) > len(names):
        takes = f"at most {len(names)} arguments ({', '.join(names)})" if names else "no arguments"
        raise CnnkitError(f"{where}: {lt.name} takes {takes}, got {len(args)}")
    given = dict(zip(names, args, strict=False))
    activation = None
    for k, v in kwargs.items():
        k = str(k).strip().lower()
        if k == "activation" and lt.takes_activation:
            activation = v
        elif k not in names:
            valid = names + (["activation"] if lt.takes_activation else [])
            raise CnnkitError(
                f"{where}: {lt.name} has no argument '{k}' "
                f"(valid: {', '.join(valid) if valid else 'none'})"
            )
        elif k in given:
            raise CnnkitError(f"{where}: {lt.name} argument '{k}' given twice")
        else:
            given[k] = v
    out: dict[str, Any] = {"type": lt.name}
    for pname, default, check in lt.params:
        if pname not in given:
            if default is REQUIRED:
                example = f"e.g. {lt.name}:32" if pname == names[0] else ", ".join(names)
                raise CnnkitError(f"{where}: {lt.name} needs {pname} ({example})")
            out[pname] = default
            continue
        try:
            out[pname] = check(given[pname])
        except ValueError as e:
            raise CnnkitError(f"{where}: {lt.name} {pname} {e}, got {given[pname]!r}") from None
    layers = [out]
    if activation is not None and str(activation).lower() not in ("linear", "none", "identity"):
        act = str(activation).strip().lower()
        if ALIASES.get(act) not in ACTIVATIONS:
            raise CnnkitError(
                f"{where}: unknown activation '{activation}' "
                f"(valid: {', '.join(sorted(ACTIVATIONS))}, linear)"
            )
        layers.append({"type": ALIASES[act]})
    return layers


def parse_layers(spec: str | Sequence | Mapping) -> list[dict]:
    """Normalise a layer spec to ``[{"type": "conv2d", "filters": 32, "kernel": 3, ...}, ...]``.

    Accepts a comma string ``"conv2d:32:3,relu,maxpool2d:2,flatten,dense"`` (positional
    arguments in declaration order, or ``key=value``), a list of such strings, a list of dicts
    (``{"type": "conv2d", "filters": 32}`` or ``{"conv2d": {"filters": 32}}`` / ``{"dense": 128}``),
    or a mapping with a ``layers`` key. Every argument is filled in with its default;
    ``activation=relu`` on conv2d/dense becomes a separate layer.
    """
    if isinstance(spec, Mapping):
        if "layers" not in spec:
            raise CnnkitError("a layer spec mapping needs a 'layers' key")
        spec = spec["layers"]
    if isinstance(spec, str):
        items: list = [s.strip() for s in spec.split(",") if s.strip()]
    elif isinstance(spec, Sequence):
        items = list(spec)
    else:
        raise CnnkitError(f"a layer spec must be a string or a list, got {type(spec).__name__}")
    if not items:
        raise CnnkitError("the layer spec is empty")
    layers: list[dict] = []
    for i, item in enumerate(items, 1):
        where = f"layer {i}"
        name, args, kwargs = _split_item(item, where)
        layers.extend(_normalise(name, args, kwargs, where))
    return layers


def load_layers_file(path: str | os.PathLike) -> list[dict]:
    """Read a YAML layer file (a list, or a mapping with a ``layers`` key) and normalise it."""
    p = Path(path)
    if not p.is_file():
        raise CnnkitError(f"model file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CnnkitError(f"cannot read model file {p}: {first}") from None
    if not isinstance(data, (list, Mapping)):
        raise CnnkitError(f"model file {p} must hold a list of layers or a 'layers:' mapping")
    try:
        return parse_layers(data)
    except CnnkitError as e:
        raise CnnkitError(f"{p}: {e}") from None


def build_layers(
    layers: str | Sequence,
    input_size: tuple[int, int, int],
    num_classes: int,
    per_pixel: bool = False,
) -> nn.Sequential:
    """Build an ``nn.Sequential`` returning logits of width ``num_classes`` from a layer spec;
    ``per_pixel``: a segmenter's, (num_classes, H, W) at the input's size, whose last conv2d
    may omit its filters (it gets the number of classes)."""
    layers = parse_layers(layers)
    if len(input_size) != 3 or any(int(d) < 1 for d in input_size):
        raise CnnkitError(f"input_size must be (C, H, W) with positive sizes, got {input_size}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise CnnkitError(f"num_classes must be a positive integer, got {num_classes!r}")
    dense_at = [i for i, layer in enumerate(layers) if layer["type"] == "dense"]
    last_dense = dense_at[-1] if dense_at else None
    conv_at = [i for i, layer in enumerate(layers) if layer["type"] == "conv2d"]
    last_conv = conv_at[-1] if conv_at and per_pixel else None

    def fill(i: int, args: dict, where: str) -> None:
        if args["type"] == "conv2d" and args["filters"] is None:
            if i != last_conv:
                last = "; only a segmenter's last conv2d may omit them" if per_pixel else ""
                raise CnnkitError(f"{where}: conv2d needs filters (e.g. conv2d:32){last}")
            args["filters"] = num_classes
        if args["type"] == "dense":
            if args["units"] is None:
                if i != last_dense:
                    raise CnnkitError(
                        f"dense needs units ({where}); only the last dense may omit them "
                        f"(it gets the number of classes)"
                    )
                args["units"] = num_classes
            elif i == last_dense and args["units"] != num_classes:
                raise CnnkitError(
                    f"the last dense has {args['units']} units but there are {num_classes} "
                    f"classes ({where}); omit units on the last dense to use the class count"
                )

    modules, shape = build_sequence(layers, tuple(int(d) for d in input_size), fill)
    if per_pixel:
        wanted = (num_classes, *input_size[1:])
        if shape != wanted:
            raise CnnkitError(
                f"a segmenter's layers must end in {wanted} (classes, H, W of the input), not "
                f"{shape}; upsample back as often as you pool, and end with a conv2d whose "
                f"filters are omitted (= the number of classes)"
            )
        return modules
    if shape != (num_classes,):
        if last_dense is None:
            raise CnnkitError(
                f"the last layer must be dense (units omitted = number of classes); "
                f"the model's output is {shape}, not ({num_classes},)"
            )
        raise CnnkitError(f"the model's output is {shape}, not ({num_classes},)")
    return modules


def build_sequence(
    layers: str | Sequence,
    input_shape: Shape,
    fill: Callable[[int, dict, str], None] | None = None,
) -> tuple[nn.Sequential, Shape]:
    """Build a layer spec on an input of a known shape ((C, H, W) or (F,), no batch) and return
    the module with its output shape; ``fill(i, args, where)`` may complete sizes a layer left
    out (the class count), and a size still missing is refused in one line."""
    layers = parse_layers(layers)
    shape: Shape = tuple(int(d) for d in input_shape)
    modules: OrderedDict[str, nn.Module] = OrderedDict()
    counts: dict[str, int] = {}
    for i, layer in enumerate(layers):
        kind = layer["type"]
        counts[kind] = counts.get(kind, 0) + 1
        label = f"{kind}_{counts[kind]}"
        where = f"layer {i + 1}, {label}"
        args = dict(layer)
        if kind == "softmax" and i != len(layers) - 1:
            raise CnnkitError(
                f"softmax must be the last layer ({where}); the model returns logits and "
                f"softmax is applied at prediction"
            )
        if fill is not None:
            fill(i, args, where)
        for size in ("filters", "units"):
            if size in args and args[size] is None:
                raise CnnkitError(f"{where}: {kind} needs {size} (e.g. {kind}:32)")
        try:
            module, shape = LAYER_TYPES[kind].build(args, shape)
        except ShapeError as e:
            raise CnnkitError(f"{e} ({where})") from None
        if module is not None:
            modules[label] = module
    return nn.Sequential(modules), shape
