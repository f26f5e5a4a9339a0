"""Pretrained weights for registered backbones: options, weight files, preprocessing, classes.

Model options (in ``ModelSpec.options``) understood by every torchvision classification model,
``efficientnet_lite0`` and ``timm:NAME``:

- ``pretrained``: None | "imagenet"; ``weights``: None | a local weights file (it stands in for
  the ImageNet file, so it wins over the cache and the download);
- ``head``: None | a layer spec for the new classifier (default ``"dropout:0.2,dense"``);
- ``transfer``: build as a ``TransferModel`` without loading weights (checkpoint rebuilds);
- ``keep_classifier`` (or ``head="imagenet"``): keep the pretrained 1000-class classifier as
  the head (``num_classes`` must be 1000); for ``cnnkit predict --model NAME --pretrained``;
- ``input_size``: the model's input size (default: the weights' own, else the data's).

Any of ``pretrained``/``weights``/``head``/``transfer``/``keep_classifier`` makes
``create_model`` return a ``TransferModel``. torchvision weights are the architecture's
``DEFAULT`` weights enum (its URL, transforms and categories); the file is found offline first
(``weights``, then ``<torch hub dir>/checkpoints/<url basename>``) and downloaded only when
``CNNKIT_OFFLINE`` is unset. torchvision never downloads by itself. timm weights: ``weights``,
then ``<torch hub dir>/checkpoints/<NAME>.safetensors`` or ``<NAME>.pth``, then timm's own
Hugging Face download when online.

Import order: this module sits below the family modules (``torchvision_models``,
``timm_models``, ``efficientnet_lite``), which import it; it knows them by name only (Lite0's
names and timm configuration come from ``lite0_config``) and imports none of them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torchvision
from torch import nn

from cnnkit.data.preprocess import Preprocessing
from cnnkit.errors import CnnkitError, did_you_mean
from cnnkit.models.imagenet import imagenet_classes
from cnnkit.models.lite0_config import IMAGENET_CLASSES, efficientnet_lite0_preprocessing
from cnnkit.models.lite0_config import NAME as LITE0
from cnnkit.models.lite0_config import lite0_pretrained_cfg as _lite0_cfg
from cnnkit.models.registry import resolve_spec
from cnnkit.models.spec import ModelSpec
from cnnkit.models.weights import hub_checkpoint_dir, offline, resolve_weights

__all__ = [
    "TRANSFER_OPTIONS",
    "pretrained_classes",
    "pretrained_preprocessing",
    "spec_for_rebuild",
    "weights_file_name",
]

TRANSFER_OPTIONS = ("pretrained", "weights", "head", "transfer", "keep_classifier", "input_size")
PRETRAINED_TAGS = ("imagenet",)
KEEP_HEAD = "imagenet"  # head="imagenet" is the same as keep_classifier=True
_GOOGLE_INPUT = ("inception_v3", "googlenet")  # weights expect transform_input=True
_DENSENET_OLD_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


# ---- options ----


def pretrained_tag(options: dict) -> str | None:
    """The normalised ``pretrained`` option: None or "imagenet" (True means "imagenet")."""
    value = options.get("pretrained")
    if value is None or value is False or (isinstance(value, str) and value.lower() == "none"):
        return None
    if value is True:
        return "imagenet"
    if isinstance(value, str) and value.strip().lower() in PRETRAINED_TAGS:
        return value.strip().lower()
    raise did_you_mean("pretrained weights", str(value), PRETRAINED_TAGS)


def uses_weights(options: dict) -> bool:
    """Whether the options load pretrained weights (``pretrained`` or a ``weights`` file)."""
    return pretrained_tag(options) is not None or options.get("weights") is not None


def wants_transfer(options: dict) -> bool:
    """Whether the options ask for a ``TransferModel`` rather than a plain model."""
    return (
        uses_weights(options)
        or options.get("head") is not None
        or bool(options.get("transfer"))
        or bool(options.get("keep_classifier"))
    )


def split_options(options: dict, *, keep_input_size: bool = False) -> tuple[dict, dict]:
    """(transfer options, the rest for the architecture's constructor)."""
    ours = {k: v for k, v in options.items() if k in TRANSFER_OPTIONS}
    rest = {k: v for k, v in options.items() if k not in TRANSFER_OPTIONS}
    if keep_input_size and options.get("input_size") is not None:
        rest["input_size"] = options["input_size"]
    pretrained_tag(ours)  # validate early
    head = ours.get("head")
    if isinstance(head, str) and head.strip().lower() == KEEP_HEAD:  # alias of keep_classifier
        ours.update(head=None, keep_classifier=True)
    if ours.get("keep_classifier") and ours.get("head") is not None:
        raise CnnkitError("keep_classifier keeps the pretrained head; do not also give a head")
    return ours, rest


def size_pair(value: Any) -> tuple[int, int]:
    """An ``input_size`` option (int or (h, w)) as (H, W)."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return (value, value)
    if (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(v, int) and v > 0 for v in value)
    ):
        return (int(value[0]), int(value[1]))
    raise CnnkitError(f"input_size must be a positive integer, got {value!r}")


def _kind(name: str) -> tuple[str, str] | None:
    """("torchvision" | "timm" | "lite0", architecture) for a backbone name, else None."""
    if name == LITE0:
        return "lite0", name
    prefix, sep, rest = name.partition(":")
    if sep and prefix.lower() == "timm":
        return "timm", rest
    if name in torchvision.models.list_models(module=torchvision.models):
        return "torchvision", name
    return None


def _as_spec(spec: ModelSpec | str) -> ModelSpec:
    if isinstance(spec, ModelSpec):
        return spec
    return resolve_spec(spec)


# ---- torchvision weights ----


def torchvision_weights(name: str) -> Any:
    """The architecture's ``DEFAULT`` weights enum (URL, transforms, categories)."""
    try:
        return torchvision.models.get_model_weights(name).DEFAULT
    except (ValueError, KeyError, AttributeError):
        raise CnnkitError(f"torchvision has no pretrained weights for '{name}'") from None


def _url_file(url: str) -> str:
    return url.rsplit("/", 1)[-1]


def torchvision_weights_file(name: str, weights_path: Any = None) -> Path:
    """The weights file: ``weights_path``, the hub cache, else a download (never offline)."""
    url = torchvision_weights(name).url
    return resolve_weights(name, weights_path=weights_path, file_name=_url_file(url), url=url)


def google_input(name: str, options: dict) -> bool | None:
    """``transform_input`` for inception_v3 / googlenet with weights: True, as torchvision sets
    it (the weights expect Google's normalisation of ImageNet-normalised input)."""
    if name in _GOOGLE_INPUT and uses_weights(options) and "transform_input" not in options:
        return True
    return None


def load_torchvision_state(model: nn.Module, state: dict, name: str, path: Path) -> None:
    """Load a torchvision state dict (auxiliary heads dropped, old DenseNet keys renamed)."""
    fixed = {}
    for key, value in state.items():
        if key.startswith(("AuxLogits.", "aux1.", "aux2.")):
            continue
        match = _DENSENET_OLD_KEY.match(key)
        fixed[match.group(1) + match.group(2) if match else key] = value
    load_strict(model, fixed, f"{name}", path)


def load_strict(model: nn.Module, state: dict, name: str, path: Path | str) -> None:
    """``load_state_dict(strict=True)`` with a one-line ``CnnkitError`` on a mismatch."""
    target = model.state_dict()
    missing = [k for k in target if k not in state]
    unexpected = [k for k in state if k not in target]
    wrong = [k for k in target if k in state and state[k].shape != target[k].shape]
    if missing or unexpected or wrong:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape", wrong)):
            if keys:
                parts.append(f"{len(keys)} {label} (e.g. {keys[0]})")
        raise CnnkitError(f"weights file {path} does not fit {name}: {', '.join(parts)}")
    model.load_state_dict(state, strict=True)


# ---- timm weights ----


def timm_weights_file(name: str, weights_path: Any = None) -> Path | None:
    """``weights_path``, else ``<hub dir>/checkpoints/<name>.safetensors|.pth``; None: let timm
    download (online only); offline without a file: ``CnnkitError`` naming file and folder."""
    if weights_path is not None:
        return resolve_weights(f"timm:{name}", weights_path=weights_path, file_name="", url=None)
    folder = hub_checkpoint_dir()
    for ext in (".safetensors", ".pth"):
        if (folder / f"{name}{ext}").is_file():
            return folder / f"{name}{ext}"
    if offline():
        raise CnnkitError(
            f"no pretrained weights for timm:{name}: put {name}.safetensors (or {name}.pth) "
            f"in {folder}/ (or pass --weights PATH)"
        )
    return None


def _timm_cfg(name: str) -> Any:
    import timm

    try:
        return timm.get_pretrained_cfg(name)
    except Exception:  # unknown tag or an older timm
        return None


# ---- public API ----


def pretrained_preprocessing(spec: ModelSpec | str) -> Preprocessing | None:
    """The pretrained weights' own preprocessing; None unless the spec uses pretrained weights.

    ``input_size`` (an option) replaces the size, keeping the crop ratio.
    """
    spec = _as_spec(spec)
    kind = _kind(spec.name)
    if kind is None or not uses_weights(spec.options):
        return None
    family, arch = kind
    if family == "lite0":
        pre = efficientnet_lite0_preprocessing()
    elif family == "timm":
        cfg = _timm_cfg(arch)
        if cfg is None:
            raise CnnkitError(f"timm has no pretrained configuration for '{arch}'")
        _, height, width = cfg.input_size
        pre = Preprocessing(
            size=(height, width),
            resize="crop",
            mean=tuple(cfg.mean),
            std=tuple(cfg.std),
            interpolation=cfg.interpolation or "bilinear",
            extra={
                "crop_pct": float(cfg.crop_pct or 1.0),
                "crop_mode": getattr(cfg, "crop_mode", None) or "center",
                "source": f"timm:{arch}",
            },
        )
    else:
        weights = torchvision_weights(arch)
        t = weights.transforms()
        crop, resize = int(t.crop_size[0]), int(t.resize_size[0])
        pre = Preprocessing(
            size=(crop, crop),
            resize="crop",
            mean=tuple(t.mean),
            std=tuple(t.std),
            interpolation=str(getattr(t.interpolation, "value", t.interpolation)),
            extra={"crop_pct": crop / resize, "source": f"torchvision:{weights}"},
        )
    if spec.options.get("input_size") is not None:
        pre.size = size_pair(spec.options["input_size"])
    return pre


def weights_input_size(name: str, options: dict) -> tuple[int, int] | None:
    """``input_size`` if given, else the pretrained weights' size, else None (data size)."""
    if options.get("input_size") is not None:
        return size_pair(options["input_size"])
    if uses_weights(options):
        pre = pretrained_preprocessing(ModelSpec(name, options=dict(options)))
        return pre.size if pre is not None else None
    return None


def pretrained_classes(spec: ModelSpec | str) -> list[str] | None:
    """The class names of ``pretrained="imagenet"`` weights (the 1000 ImageNet names)."""
    spec = _as_spec(spec)
    kind = _kind(spec.name)
    if kind is None or pretrained_tag(spec.options) is None:
        return None
    family, arch = kind
    if family == "torchvision":
        return list(torchvision_weights(arch).meta["categories"])
    if family == "timm":
        cfg = _timm_cfg(arch)
        if cfg is None or (cfg.num_classes or 0) != IMAGENET_CLASSES:
            return None
    return imagenet_classes()


def spec_for_rebuild(spec: ModelSpec | str) -> ModelSpec:
    """A copy that builds the same structure (same state_dict keys) and loads no weights.

    ``pretrained``/``weights`` become None and ``transfer=True``; ``transform_input=True`` is
    pinned for inception_v3/googlenet with weights, and ``input_size`` to the weights' size.
    """
    spec = _as_spec(spec)
    new = ModelSpec.from_dict(spec.to_dict())
    options = new.options
    if _kind(new.name) is None or not wants_transfer(options):
        return new
    if google_input(new.name, options):
        options["transform_input"] = True
    if options.get("input_size") is None and uses_weights(options):
        size = weights_input_size(new.name, options)
        if size is not None:
            options["input_size"] = size[0] if size[0] == size[1] else list(size)
    options.update(pretrained=None, weights=None, transfer=True)
    return new


def weights_file_name(spec: ModelSpec | str) -> str:
    """The file name looked for in the hub cache, e.g. "resnet18-f37072fd.pth"."""
    spec = _as_spec(spec)
    kind = _kind(spec.name)
    if kind is None:
        raise CnnkitError(f"model '{spec.name}' has no pretrained weights")
    family, arch = kind
    if family == "torchvision":
        return _url_file(torchvision_weights(arch).url)
    if family == "timm":
        return f"{arch}.safetensors"
    url = _lite0_cfg().get("url") or ""
    return _url_file(url) if url else "tf_efficientnet_lite0.pth"
