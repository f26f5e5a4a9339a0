"""``timm:NAME`` models, when timm is installed (``pip install timm``); imported lazily.

Without transfer options (see ``cnnkit.models.pretrained``) a plain random-init timm model; with
them a ``TransferModel``: the classifier is removed with ``reset_classifier(0)`` (pooled
features) or the backbone is ``forward_features`` (feature map, for a spatial head), and the
blocks come from timm's own ``group_matcher(coarse=True)``.
"""

from __future__ import annotations

import contextlib
from types import ModuleType
from typing import Any

import torch
from torch import nn

from cnnkit.errors import CnnkitError, did_you_mean
from cnnkit.models.pretrained import (
    TRANSFER_OPTIONS,
    load_strict,
    split_options,
    timm_weights_file,
    uses_weights,
    wants_transfer,
    weights_input_size,
)
from cnnkit.models.registry import ModelFamily, register_family
from cnnkit.models.transfer import (
    TransferModel,
    blocks_from_groups,
    blocks_from_param_groups,
    group_children,
    is_spatial_head,
    kept_classifier_head,
)
from cnnkit.models.weights import load_state_dict_file


def _timm() -> ModuleType:
    try:
        import timm
    except ImportError:
        raise CnnkitError("timm is not installed: pip install timm") from None
    return timm


def _check(name: str) -> None:
    timm = _timm()
    if not timm.is_model(name):
        raise did_you_mean("timm model", name, timm.list_models())


class TimmFeatures(nn.Module):
    """A timm model's ``forward_features``: images -> the unpooled feature map."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)


def _timm_blocks(model: nn.Module) -> list[nn.Module]:
    """Stages from timm's ``group_matcher(coarse=True)`` (stem, blocks/stages, final norm)."""
    try:
        from timm.models import group_parameters

        grouped = group_parameters(model, model.group_matcher(coarse=True))
        groups = [grouped[key] for key in sorted(grouped)]
    except Exception:  # a model without a group matcher: its top-level children
        groups = None
    if groups:
        return blocks_from_param_groups(model, groups)
    items: list[nn.Module] = []
    for name, child in model.named_children():
        expand = name in ("stages", "blocks", "layers", "features")
        expand = expand and next(child.children(), None) is not None
        items.extend(child.children() if expand else [child])
    return blocks_from_groups(model, group_children(items))


def wrap_timm(
    model: nn.Module,
    num_classes: int,
    shape: tuple[int, int, int],
    options: dict,
    *,
    keep_dropout: float = 0.0,
) -> TransferModel:
    """A ``TransferModel`` around a built (and loaded) timm model.

    ``keep_classifier``: the head is ``[dropout:keep_dropout,] dense`` holding the model's own
    classifier weights (``num_classes`` must match it).
    """
    head = options.get("head")
    keep = bool(options.get("keep_classifier"))
    classifier = model.get_classifier()
    if keep:
        head = kept_classifier_head(classifier, num_classes, keep_dropout)
    model.reset_classifier(0)
    spatial = is_spatial_head(head)
    blocks = _timm_blocks(model)
    backbone = TimmFeatures(model) if spatial else model
    return TransferModel(
        backbone,
        head,
        num_classes,
        shape,
        blocks=blocks,
        pooled=not spatial,
        kept_classifier=classifier if keep else None,
    )


def _build_transfer(
    name: str, num_classes: int, shape: tuple[int, int, int], options: dict
) -> TransferModel:
    timm = _timm()
    ours, rest = split_options(options)
    cfg = None
    with contextlib.suppress(Exception):  # unknown tag or an older timm: 1000 classes
        cfg = timm.get_pretrained_cfg(name)
    kwargs = {
        "num_classes": int(getattr(cfg, "num_classes", 0) or 1000),
        "in_chans": shape[0],
        "drop_rate": 0.0,  # the head brings its own dropout
        **rest,
    }
    pretrained = uses_weights(ours)
    if pretrained and shape[0] != 3:
        raise CnnkitError(f"pretrained timm:{name} expects 3-channel images, got {tuple(shape)}")
    path = timm_weights_file(name, ours.get("weights")) if pretrained else None
    try:
        model = timm.create_model(name, pretrained=pretrained and path is None, **kwargs)
    except TypeError as e:
        raise CnnkitError(f"timm model '{name}': bad option ({e})") from None
    except Exception as e:  # timm's own download (online only) failed
        if not pretrained or path is not None:
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CnnkitError(
            f"no pretrained weights for timm:{name} ({first}): put {name}.safetensors in "
            f"the torch hub checkpoints folder (or pass --weights PATH)"
        ) from None
    if path is not None:
        load_strict(model, load_state_dict_file(path), f"timm:{name}", path)
    return wrap_timm(model, num_classes, shape, ours)


def _build(
    name: str, num_classes: int, input_size: tuple[int, int, int], /, **options: Any
) -> nn.Module:
    _check(name)
    if wants_transfer(options):
        return _build_transfer(name, num_classes, input_size, options)
    options = {k: v for k, v in options.items() if k not in TRANSFER_OPTIONS}
    try:
        return _timm().create_model(
            name, pretrained=False, num_classes=num_classes, in_chans=input_size[0], **options
        )
    except TypeError as e:
        raise CnnkitError(f"timm model '{name}': bad option ({e})") from None


def _input_size(name: str, data: tuple[int, int], options: dict) -> tuple[int, int]:
    wanted = weights_input_size(f"timm:{name}", options)
    if wanted is not None:
        return wanted
    try:
        cfg = _timm().get_pretrained_cfg(name)
    except Exception:  # an unknown tag or an older timm: use the data size
        cfg = None
    if cfg is None:
        return data
    if "img_size" in options:
        size = options["img_size"]
        return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if getattr(cfg, "fixed_input_size", False):
        return int(cfg.input_size[1]), int(cfg.input_size[2])
    low = getattr(cfg, "min_input_size", None)
    if low and (data[0] < low[1] or data[1] < low[2]):
        return max(data[0], int(low[1])), max(data[1], int(low[2]))
    return data


register_family(ModelFamily("timm", _build, _check, _input_size))
