"""Segmenters: torchvision's FCN, DeepLabV3 and LR-ASPP heads on cnnkit's backbones, torchvision's
COCO-trained segmentation models, and fully convolutional networks from layer specs.

Model names (``cnnkit train --model NAME``):

- ``ARCH_BACKBONE``: ARCH is ``fcn``, ``deeplabv3``, ``deeplabv3plus`` (DeepLabV3 with a decoder
  over stride-4 features) or ``lraspp``; BACKBONE is ``mobilenet_v2``
  (the default: a bare ``lraspp`` is ``lraspp_mobilenet_v2``), ``efficientnet_lite0`` (or
  ``lite0``), or any convolutional torchvision classifier (``resnet18``, ...). The backbone
  starts from ImageNet weights (``pretrained="imagenet"``, the default). ``output_stride``
  (32, 16 or 8; default 16, 8 for FCN as torchvision's ResNet FCN) dilates the last stride
  stages instead of downsampling them: finer masks, more computation.
- with ``pretrained="coco"``: torchvision's own segmentation models by their names
  (``fcn_resnet50``, ``deeplabv3_mobilenet_v3_large``, ``lraspp_mobilenet_v3_large``, ... see
  ``COCO_SEGMENTERS``), their weights (trained on COCO with VOC's 21 classes) from a file or the
  torch hub cache, with a new last layer for the user's classes.
- ``layers``: a layer spec (conv/pool down, ``upsample`` or ``conv_transpose2d`` back, a last
  ``conv2d`` whose filters are left out = the classes), built at the input size.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torchvision
from torch import nn
from torchvision.models.segmentation.deeplabv3 import DeepLabHead
from torchvision.models.segmentation.fcn import FCNHead
from torchvision.models.segmentation.lraspp import LRASPPHead

from cnnkit.errors import CnnkitError, did_you_mean
from cnnkit.models.layers import build_layers, load_layers_file, parse_layers
from cnnkit.models.pretrained import load_strict, torchvision_weights_file
from cnnkit.models.weights import load_state_dict_file
from cnnkit.tasks.detect.backbones import (
    LITE0,
    MOBILENET_V2,
    StageOutputs,
    build_backbone,
    canonical_backbone,
    probe_layers,
    stride_groups,
)
from cnnkit.tasks.segment.names import COCO_SEGMENTERS, SEGMENTATION_ARCHITECTURES
from cnnkit.tasks.segment.networks import (
    DeepLabV3PlusHead,
    FeatureHead,
    SegmentationModel,
    TorchvisionSegmenter,
    dilate,
)

ARCHS = SEGMENTATION_ARCHITECTURES
LAYERS = "layers"
DEFAULT_BACKBONE = MOBILENET_V2
DEFAULT_IMAGE_SIZE = 512
DEFAULT_OUTPUT_STRIDE = {"fcn": 8, "deeplabv3": 16, "deeplabv3plus": 16, "lraspp": 16}
# the second feature level a two-level head reads, by stride, and its name there
SECOND_LEVEL = {"lraspp": (8, "low"), "deeplabv3plus": (4, "fine")}
OUTPUT_STRIDES = (8, 16, 32)
LRASPP_CHANNELS = 128
SPEC_OPTIONS = ("pretrained", "weights", "output_stride")
WEIGHT_KINDS = ("imagenet", "coco")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# the state-dict keys of torchvision's segmenters that depend on the number of classes
COCO_CLASS_KEYS = re.compile(r"^classifier\.(4|low_classifier|high_classifier)\.")
_DESCRIPTION = {
    "fcn": "FCN (fully convolutional head)",
    "deeplabv3": "DeepLabV3 (atrous spatial pyramid pooling)",
    "deeplabv3plus": "DeepLabV3+ (ASPP and a decoder over stride-4 features)",
    "lraspp": "LR-ASPP (light head over two feature levels)",
}


@dataclass
class SegmenterSpec:
    """What a checkpoint stores to rebuild a segmenter: its name, options, and layer specs."""

    name: str  # "lraspp_mobilenet_v2", "fcn_resnet50", "layers"
    options: dict = field(default_factory=dict)
    layers: list[dict] | None = None  # a layer-spec segmenter's normalised layers

    @property
    def arch(self) -> str:
        return LAYERS if self.name == LAYERS else self.name.split("_", 1)[0]

    @property
    def backbone(self) -> str | None:
        return None if self.name == LAYERS else self.name.split("_", 1)[1]

    @property
    def weights_kind(self) -> str | None:
        """ "imagenet" (a backbone), "coco" (torchvision's whole segmenter) or None."""
        if self.name == LAYERS:
            return None
        return _weights_kind(self.options.get("pretrained", "default"))

    @property
    def coco_model(self) -> bool:
        return self.weights_kind == "coco"

    @property
    def output_stride(self) -> int | None:
        if self.name == LAYERS or self.coco_model:
            return None
        return int(self.options.get("output_stride") or DEFAULT_OUTPUT_STRIDE[self.arch])

    def to_dict(self) -> dict:
        """Plain values only, so ``torch.load(weights_only=True)`` reads it."""
        return {"name": self.name, "options": dict(self.options), "layers": self.layers}

    @classmethod
    def from_dict(cls, d: dict) -> SegmenterSpec:
        if not isinstance(d, dict) or not isinstance(d.get("name"), str):
            raise CnnkitError(f"not a segmenter spec (needs a 'name'): {d!r:.200}")
        if d["name"] == LAYERS:
            return segmenter_spec(d.get("layers") or [], **dict(d.get("options") or {}))
        return segmenter_spec(d["name"], **dict(d.get("options") or {}))


def _weights_kind(value: Any) -> str | None:
    if value == "default":
        return "imagenet"
    if value is None or value is False or (isinstance(value, str) and value.lower() == "none"):
        return None
    kind = "imagenet" if value is True else str(value).strip().lower()
    if kind not in WEIGHT_KINDS:
        raise did_you_mean("pretrained weights", str(value), WEIGHT_KINDS)
    return kind


def is_layer_spec(model: Any) -> bool:
    """A layer list, a YAML layer file, or a "conv2d:16:3,relu,..." string."""
    if isinstance(model, (list, tuple)):
        return True
    if isinstance(model, os.PathLike):
        return True
    text = str(model).strip()
    return "," in text or ":" in text or text.lower().endswith((".yaml", ".yml"))


def segmenter_names() -> list[str]:
    """The listed model names: each architecture on the two shipped backbones."""
    return [f"{a}_{b}" for a in ARCHS for b in (MOBILENET_V2, LITE0)]


def segmenter_spec(name: Any, **options: Any) -> SegmenterSpec:
    """A checked ``SegmenterSpec`` from a model name (see the module doc), a layer spec, a spec
    or its dict; ``options`` (``pretrained``, ``weights``, ``output_stride``) go over its own."""
    if isinstance(name, SegmenterSpec):
        name, options, layers = name.name, {**name.options, **options}, name.layers
        if name == LAYERS:
            name = layers
    elif isinstance(name, dict) and "name" in name:
        spec = SegmenterSpec.from_dict(name)
        return segmenter_spec(spec, **options)
    for option in options:
        if option not in SPEC_OPTIONS:
            raise CnnkitError(
                f"segmenter has no option '{option}' (valid: {', '.join(SPEC_OPTIONS)})"
            )
    if is_layer_spec(name):
        text = name if isinstance(name, (list, tuple)) else str(name).strip()
        if isinstance(text, str) and text.lower().endswith((".yaml", ".yml")):
            layers = load_layers_file(Path(text))
        else:
            layers = parse_layers(text)
        given = [k for k, v in options.items() if v not in (None, "none")]
        if given:
            raise CnnkitError(
                f"a layer-spec segmenter trains from scratch: {given[0]} does not apply"
            )
        return SegmenterSpec(LAYERS, {}, layers)
    if not isinstance(name, str) or not name.strip():
        raise CnnkitError(f"a segmenter name must be a non-empty string, got {name!r}")
    key = name.strip().lower()
    if key in ARCHS:
        key = f"{key}_{DEFAULT_BACKBONE}"
    arch, _, backbone = key.partition("_")
    if arch not in ARCHS or not backbone:
        raise did_you_mean("segmenter", name, [*ARCHS, *segmenter_names(), *COCO_SEGMENTERS])
    spec = SegmenterSpec(
        key, {k: v for k, v in options.items() if v is not None or k == "pretrained"}
    )
    if spec.coco_model:
        if key not in COCO_SEGMENTERS:
            raise CnnkitError(
                f"--pretrained coco needs one of torchvision's segmentation models "
                f"({', '.join(COCO_SEGMENTERS)}), not {key}"
            )
        if spec.options.get("output_stride") is not None:
            raise CnnkitError(f"{key} with COCO weights has its own output stride")
    else:
        spec.name = f"{arch}_{canonical_backbone(backbone)}"
        stride = spec.options.get("output_stride")
        if stride is not None and (isinstance(stride, bool) or stride not in OUTPUT_STRIDES):
            raise CnnkitError(f"output_stride must be 8, 16 or 32, got {stride!r}")
        if arch == "lraspp" and spec.output_stride == 8:
            raise CnnkitError("LR-ASPP reads stride 8 and a coarser map: output_stride 16 or 32")
    return spec


def list_segmenters() -> list[tuple[str, str]]:
    """(name, one-line description) of the segmenters, for ``cnnkit models --task segment``."""
    rows = []
    for arch in ARCHS:
        rows.append((f"{arch}_{MOBILENET_V2}", f"{_DESCRIPTION[arch]} on MobileNetV2 (ImageNet)"))
        rows.append((f"{arch}_{LITE0}", f"{_DESCRIPTION[arch]} on EfficientNet-Lite0 (ImageNet)"))
    rows.append(("ARCH_<torchvision CNN>", "any of the three on a torchvision classifier"))
    for name in COCO_SEGMENTERS:
        rows.append((name, "torchvision's, with --pretrained coco (COCO weights, VOC classes)"))
    rows.append(("a layer spec", 'e.g. "conv2d:16:3:padding=same,relu,maxpool2d,...,upsample,'))
    rows.append(("", 'conv2d:kernel=1" (with --task segment): a fully convolutional network'))
    return rows


# ---- building ----


def _check_int(value: Any, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise CnnkitError(f"{what} must be an integer of at least {minimum}, got {value!r}")
    return value


def _head(arch: str, second: int, high: int, num_classes: int) -> nn.Module:
    """The head over the last map's ``high`` channels (and the second level's ``second``)."""
    if arch == "fcn":
        return FCNHead(high, num_classes)
    if arch == "deeplabv3":
        return DeepLabHead(high, num_classes)
    if arch == "deeplabv3plus":
        return DeepLabV3PlusHead(second, high, num_classes)
    return LRASPPHead(second, high, num_classes, LRASPP_CHANNELS)


def _on_backbone(spec: SegmenterSpec, num_classes: int, load: bool) -> SegmentationModel:
    weights_path = spec.options.get("weights") if load else None
    backbone = build_backbone(spec.backbone, pretrained=load, weights_path=weights_path)
    layers, strides = backbone.layers, list(backbone.strides)
    stride = spec.output_stride or 32
    if stride < 32:
        dilate(layers, strides, stride)
        probed = [s for _, s, _ in probe_layers(layers._modules.items())]
        if probed[-1] != stride:  # a layer the rule cannot dilate (e.g. a strided pooling)
            raise CnnkitError(f"backbone {backbone.name} cannot be dilated to stride {stride}")
    second_stride, second_name = SECOND_LEVEL.get(spec.arch, (8, "low"))
    second = backbone.last_at(second_stride)
    body = StageOutputs(layers, {second: second_name, list(layers._modules)[-1]: "out"})
    channels = backbone.channels_at(second_stride)
    head = _head(spec.arch, channels, backbone.channels[-1], num_classes)
    net = FeatureHead(body, head, two_levels=spec.arch in SECOND_LEVEL)
    names = [f"net.body.{n}" for n in layers._modules]
    return SegmentationModel(
        net,
        spec=spec,
        num_classes=num_classes,
        image_size=0,
        mean=backbone.mean,
        std=backbone.std,
        blocks=stride_groups(names, strides),
    )


def _torchvision_coco(spec: SegmenterSpec, num_classes: int, load: bool) -> SegmentationModel:
    model = torchvision.models.get_model(
        spec.name, weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=False
    )
    if load:
        path = torchvision_weights_file(spec.name, spec.options.get("weights"))
        load_coco_segmenter(model, spec.name, path)
    children = list(model.backbone.named_children())
    strides = [s for _, s, _ in probe_layers(children)]
    names = [f"net.model.backbone.{n}" for n, _ in children]
    return SegmentationModel(
        TorchvisionSegmenter(model),
        spec=spec,
        num_classes=num_classes,
        image_size=0,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        blocks=stride_groups(names, strides),
    )


def load_coco_segmenter(model: nn.Module, name: str, path: str | os.PathLike) -> None:
    """Load torchvision's COCO weights file into ``model`` (built for any number of classes,
    without the auxiliary head): all but the class-specific last layers."""
    loaded = load_state_dict_file(path)
    own = model.state_dict()
    state = {
        k: v
        for k, v in loaded.items()
        if not COCO_CLASS_KEYS.match(k) and not k.startswith("aux_classifier.")
    }
    for key in own:
        if COCO_CLASS_KEYS.match(key):
            state[key] = own[key]
    load_strict(model, state, name, path)


def build_segmenter(
    spec: SegmenterSpec | str | dict | list,
    num_classes: int,
    *,
    pretrained_backbone: bool = True,
    image_size: int | None = None,
) -> SegmentationModel:
    """The segmenter ``spec`` names, for ``num_classes`` classes (background included) and
    square inputs of ``image_size`` (default ``DEFAULT_IMAGE_SIZE``; a layer-spec network is
    built for it, the others take any size).

    ``pretrained_backbone``: load the weights the spec asks for; False builds the same module
    without fetching anything (to load a checkpoint). With pretrained weights the backbone's
    BatchNorm stays in eval mode and all of it trains (``freeze`` changes that).
    """
    spec = segmenter_spec(spec)
    num_classes = _check_int(num_classes, "num_classes", 1)
    size = _check_int(DEFAULT_IMAGE_SIZE if image_size is None else image_size, "image size", 32)
    load = pretrained_backbone and spec.weights_kind is not None
    if spec.name == LAYERS:
        net = build_layers(spec.layers or [], (3, size, size), num_classes, per_pixel=True)
        model = SegmentationModel(
            net,
            spec=spec,
            num_classes=num_classes,
            image_size=size,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            blocks=[],
        )
    elif spec.coco_model:
        model = _torchvision_coco(spec, num_classes, load)
    else:
        model = _on_backbone(spec, num_classes, load)
    model.image_size = size
    if spec.weights_kind is not None:
        model.backbone_bn_eval = True
    return model


def segmenter_from_record(record: dict) -> SegmentationModel:
    """Rebuild a ``SegmentationModel`` from its ``record()`` without fetching any weights; load
    its state dict next."""
    try:
        spec = SegmenterSpec.from_dict(record["spec"])
        num_classes, image_size = record["num_classes"], record["image_size"]
    except (KeyError, TypeError):
        raise CnnkitError(f"not a segmenter record: {record!r:.200}") from None
    return build_segmenter(spec, num_classes, pretrained_backbone=False, image_size=image_size)
