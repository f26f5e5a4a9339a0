"""``timm:NAME`` models, when timm is installed (``pip install timm``); imported lazily."""

from __future__ import annotations

from types import ModuleType
from typing import Any

from torch import nn

from cnnkit.errors import CnnkitError, did_you_mean
from cnnkit.models.registry import ModelFamily, register_family


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


def _build(
    name: str, num_classes: int, input_size: tuple[int, int, int], **options: Any
) -> nn.Module:
    _check(name)
    # Random init for now; a pretrained path would pass pretrained=True here.
    try:
        return _timm().create_model(
            name, pretrained=False, num_classes=num_classes, in_chans=input_size[0], **options
        )
    except TypeError as e:
        raise CnnkitError(f"timm model '{name}': bad option ({e})") from None


def _input_size(name: str, data: tuple[int, int], options: dict) -> tuple[int, int]:
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
