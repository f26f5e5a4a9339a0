"""Detectors: torchvision's FCOS, RetinaNet, SSDlite and Faster R-CNN on cnnkit's backbones.

Model names (``cnnkit train --model NAME``):

- ``ARCH_BACKBONE``: ARCH is ``fcos``, ``retinanet``, ``ssdlite`` or ``fasterrcnn``; BACKBONE is
  ``mobilenet_v2`` (the default: a bare ``fcos`` is ``fcos_mobilenet_v2``), ``efficientnet_lite0``
  (or ``lite0``), or any convolutional torchvision classifier (``resnet18``, ...). The backbone
  starts from ImageNet weights (``pretrained="imagenet"``, the default); FCOS, RetinaNet and
  Faster R-CNN read C3-C5 through a feature pyramid (``fpn_channels`` wide, P6/P7 added for
  FCOS and RetinaNet, a max-pooled P6 for Faster R-CNN), SSDlite reads C4, C5 and four extra
  layers of its own.
- torchvision's COCO detectors by their torchvision names (``fcos_resnet50_fpn``,
  ``ssdlite320_mobilenet_v3_large``, ... see ``COCO_DETECTORS``), trained on COCO
  (``pretrained="coco"``, their default), with new class heads for the user's classes.

``DetectionModel`` wraps the torchvision model: labels are 0-based class indices in and out (SSD and
Faster R-CNN reserve 0 for the background, so they see labels + 1), images are float (3, H, W)
in [0, 1] (a list, or a (B, 3, H, W) batch), normalised inside by the weights' mean and std.
An input of ``image_size`` (square, already letterboxed) is not resized; other sizes are scaled
to fit it and the boxes come back in the input's pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from cnnkit.errors import CnnkitError, did_you_mean
from cnnkit.tasks.detect.architectures import build_architecture, detection_transform
from cnnkit.tasks.detect.backbones import (
    LITE0,
    MOBILENET_V2,
    build_backbone,
    canonical_backbone,
    probe_layers,
    stride_groups,
)
from cnnkit.tasks.detect.coco_weights import (
    COCO_DETECTORS,
    build_torchvision_detector,
    coco_weights_file,
    load_coco_weights,
)
from cnnkit.tasks.detect.detector import DetectionModel
from cnnkit.tasks.detect.postprocess import PostProcess

ARCHS = ("fcos", "retinanet", "ssdlite", "fasterrcnn")
DEFAULT_BACKBONE = MOBILENET_V2
DEFAULT_IMAGE_SIZE = {"fcos": 416, "retinanet": 416, "ssdlite": 320, "fasterrcnn": 416}
DEFAULT_FPN_CHANNELS = 128
# With pretrained weights the backbone's last 3 stride stages train (of 5: strides 2, 4, 8, 16,
# 32), as torchvision's trainable_backbone_layers=3 default; its BatchNorm stays in eval mode.
DEFAULT_TRAINABLE_BLOCKS = 3
LABEL_OFFSET = {"fcos": 0, "retinanet": 0, "ssdlite": 1, "fasterrcnn": 1}  # 1: background is 0
SPEC_OPTIONS = ("pretrained", "weights", "fpn_channels")
WEIGHT_KINDS = ("imagenet", "coco")
_DESCRIPTION = {
    "fcos": "FCOS (anchor-free, feature pyramid)",
    "retinanet": "RetinaNet (anchors, focal loss, feature pyramid)",
    "ssdlite": "SSDlite (single shot, light heads)",
    "fasterrcnn": "Faster R-CNN (two-stage, feature pyramid)",
}


# ---- the spec ----


@dataclass
class DetectorSpec:
    """What a checkpoint stores to rebuild a detector: its canonical name and options."""

    name: str  # "fcos_mobilenet_v2", "ssdlite_efficientnet_lite0", "fcos_resnet50_fpn", ...
    options: dict = field(default_factory=dict)

    @property
    def coco_model(self) -> bool:
        """Whether this is one of torchvision's COCO detectors (its own backbone and layout)."""
        return self.name in COCO_DETECTORS

    @property
    def arch(self) -> str:
        return COCO_DETECTORS[self.name] if self.coco_model else self.name.split("_", 1)[0]

    @property
    def backbone(self) -> str | None:
        """cnnkit backbone name; None for torchvision's COCO detectors."""
        return None if self.coco_model else self.name.split("_", 1)[1]

    @property
    def weights_kind(self) -> str | None:
        """ "imagenet" (a backbone), "coco" (a whole detector) or None (random init)."""
        return _weights_kind(self.options.get("pretrained", "default"), self.coco_model)

    def to_dict(self) -> dict:
        """Plain values only, so ``torch.load(weights_only=True)`` reads it."""
        return {"name": self.name, "options": dict(self.options)}

    @classmethod
    def from_dict(cls, d: dict) -> DetectorSpec:
        if not isinstance(d, dict) or not isinstance(d.get("name"), str):
            raise CnnkitError(f"not a detector spec (needs a 'name'): {d!r:.200}")
        return detector_spec(d["name"], **dict(d.get("options") or {}))


def _weights_kind(value: Any, coco_model: bool) -> str | None:
    if value == "default":
        return "coco" if coco_model else "imagenet"
    if value is None or value is False or (isinstance(value, str) and value.lower() == "none"):
        return None
    kind = "imagenet" if value is True else str(value).strip().lower()
    if kind not in WEIGHT_KINDS:
        raise did_you_mean("pretrained weights", str(value), WEIGHT_KINDS)
    return kind


def detector_names() -> list[str]:
    """The listed model names: each architecture on the two shipped backbones, then COCO's."""
    return [f"{a}_{b}" for a in ARCHS for b in (MOBILENET_V2, LITE0)] + list(COCO_DETECTORS)


def detector_spec(name: str | DetectorSpec | dict, **options: Any) -> DetectorSpec:
    """A checked ``DetectorSpec`` from a model name (see the module doc), a spec or its dict;
    ``options`` (``pretrained``, ``weights``, ``fpn_channels``) go over the spec's own."""
    if isinstance(name, DetectorSpec):
        name, options = name.name, {**name.options, **options}
    elif isinstance(name, dict):
        spec = DetectorSpec.from_dict(name)
        name, options = spec.name, {**spec.options, **options}
    if not isinstance(name, str) or not name.strip():
        raise CnnkitError(f"a detector name must be a non-empty string, got {name!r}")
    key = name.strip().lower()
    if key in ARCHS:
        key = f"{key}_{DEFAULT_BACKBONE}"
    arch, _, backbone = key.partition("_")
    if key not in COCO_DETECTORS:
        if arch not in ARCHS or not backbone:
            raise did_you_mean("detector", name, [*ARCHS, *detector_names()])
        key = f"{arch}_{canonical_backbone(backbone)}"
    for option in options:
        if option not in SPEC_OPTIONS:
            raise CnnkitError(
                f"detector '{key}' has no option '{option}' (valid: {', '.join(SPEC_OPTIONS)})"
            )
    # None is "not given", except for pretrained, where it means random initialisation.
    spec = DetectorSpec(
        key, {k: v for k, v in options.items() if v is not None or k == "pretrained"}
    )
    kind = spec.weights_kind
    if kind == "coco" and not spec.coco_model:
        raise CnnkitError(
            f"--pretrained coco needs one of torchvision's COCO detectors "
            f"({', '.join(COCO_DETECTORS)}); {key} has an ImageNet backbone (--pretrained imagenet)"
        )
    if kind == "imagenet" and spec.coco_model:
        raise CnnkitError(
            f"{key} takes --pretrained coco (or none); for ImageNet weights name a backbone, "
            f"e.g. {spec.arch}_resnet50"
        )
    channels = spec.options.get("fpn_channels")
    if channels is not None and (spec.coco_model or spec.arch == "ssdlite"):
        raise CnnkitError(f"{key} has no feature pyramid of cnnkit's: fpn_channels does not apply")
    if channels is not None and (
        isinstance(channels, bool)
        or not isinstance(channels, int)
        or channels < 32
        or channels % 32
    ):
        raise CnnkitError(f"fpn_channels must be a multiple of 32, got {channels!r}")
    return spec


def list_detectors() -> list[tuple[str, str]]:
    """(name, one-line description) of the detectors, for ``cnnkit models --task detect``."""
    rows = []
    for arch in ARCHS:
        rows.append((f"{arch}_{MOBILENET_V2}", f"{_DESCRIPTION[arch]} on MobileNetV2 (ImageNet)"))
        rows.append((f"{arch}_{LITE0}", f"{_DESCRIPTION[arch]} on EfficientNet-Lite0 (ImageNet)"))
    rows.append(
        (
            "ARCH_<torchvision CNN>",
            "any of the four on a torchvision classifier, e.g. fcos_resnet18",
        )
    )
    for name, arch in COCO_DETECTORS.items():
        rows.append((name, f"torchvision's {_DESCRIPTION[arch].split(' (')[0]}, COCO weights"))
    return rows


# ---- building ----


def _check_num_classes(num_classes: int) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise CnnkitError(f"num_classes must be a positive integer, got {num_classes!r}")
    return num_classes


def _check_image_size(arch: str, image_size: int | None) -> int:
    if image_size is None:
        return DEFAULT_IMAGE_SIZE[arch]
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 64:
        raise CnnkitError(
            f"detection image size must be an integer of at least 64, got {image_size!r}"
        )
    return image_size


def _coco_body(model: nn.Module, name: str) -> list[tuple[str, nn.Module]]:
    """torchvision COCO detector's backbone layers in order, with their names in ``model``."""
    if COCO_DETECTORS[name] == "ssdlite":
        return [
            (f"backbone.features.{i}.{j}", layer)
            for i, part in enumerate(model.backbone.features)
            for j, layer in enumerate(part)
        ]
    return [(f"backbone.body.{n}", layer) for n, layer in model.backbone.body.named_children()]


def build_detector(
    spec: DetectorSpec | str | dict,
    num_classes: int,
    *,
    pretrained_backbone: bool = True,
    image_size: int | None = None,
    postprocess: PostProcess | None = None,
) -> DetectionModel:
    """The detector ``spec`` names, for ``num_classes`` classes and square inputs of
    ``image_size`` (None: the architecture's default, ``DEFAULT_IMAGE_SIZE``).

    ``pretrained_backbone``: load the weights the spec asks for (ImageNet backbone, COCO
    detector); False builds the same module without fetching anything (to load a checkpoint).
    With pretrained weights in the spec the backbone's BatchNorm stays in eval mode and only its
    last ``DEFAULT_TRAINABLE_BLOCKS`` stride stages train (``freeze`` changes that).
    """
    spec = detector_spec(spec)
    num_classes = _check_num_classes(num_classes)
    size = _check_image_size(spec.arch, image_size)
    load = pretrained_backbone and spec.weights_kind is not None
    weights_path = spec.options.get("weights") if load else None
    n_out = num_classes + LABEL_OFFSET[spec.arch]
    if spec.coco_model:
        model = build_torchvision_detector(spec.name, n_out)
        if load:
            load_coco_weights(model, spec.name, coco_weights_file(spec.name, weights_path))
        mean, std = list(model.transform.image_mean), list(model.transform.image_std)
        layers = _coco_body(model, spec.name)
        strides = [s for _, s, _ in probe_layers(layers)]
        blocks = stride_groups([n for n, _ in layers], strides)
    else:
        backbone = build_backbone(spec.backbone, pretrained=load, weights_path=weights_path)
        channels = int(spec.options.get("fpn_channels") or DEFAULT_FPN_CHANNELS)
        model = build_architecture(spec.arch, backbone, n_out, size, channels)
        mean, std = list(backbone.mean), list(backbone.std)
        names = [f"backbone.body.{n}" for n in backbone.layers._modules]
        blocks = stride_groups(names, backbone.strides)
    model.transform = detection_transform(spec.arch, size, mean, std)
    detector = DetectionModel(
        model,
        spec=spec,
        num_classes=num_classes,
        image_size=size,
        label_offset=LABEL_OFFSET[spec.arch],
        blocks=blocks,
        postprocess=postprocess or PostProcess(),
    )
    if spec.weights_kind is not None:
        detector.backbone_bn_eval = True
        detector.freeze(DEFAULT_TRAINABLE_BLOCKS)
    return detector


def detector_from_record(record: dict) -> DetectionModel:
    """Rebuild a ``DetectionModel`` from its ``record()`` without fetching any weights; load its
    state dict next."""
    try:
        spec = DetectorSpec.from_dict(record["spec"])
        num_classes, image_size = record["num_classes"], record["image_size"]
        postprocess = PostProcess.from_dict(record["postprocess"])
    except (KeyError, TypeError):
        raise CnnkitError(f"not a detector record: {record!r:.200}") from None
    return build_detector(
        spec,
        num_classes,
        pretrained_backbone=False,
        image_size=image_size,
        postprocess=postprocess,
    )
