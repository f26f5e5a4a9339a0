"""The four torchvision architectures on a cnnkit ``Backbone``, and their input transform.

FCOS, RetinaNet and Faster R-CNN read C3-C5 through a feature pyramid (torchvision's
``BackboneWithFPN``); FCOS and RetinaNet add P6/P7, Faster R-CNN a max-pooled P6. SSDlite reads
C4 and C5 and adds four stride-2 layers of its own. Anchors: torchvision's defaults for FCOS and
RetinaNet; Faster R-CNN one size per pyramid level (32-256 px) at three aspect ratios.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn
from torchvision.models.detection import FCOS, FasterRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator, DefaultBoxGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.models.detection.ssd import SSD
from torchvision.models.detection.ssdlite import SSDLiteHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import Conv2dNormActivation, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

from cnnkit.tasks.detect.backbones import Backbone, StageOutputs

SSDLITE_EXTRA_CHANNELS = (512, 256, 256, 128)


def _fpn(backbone: Backbone, channels: int, extra: nn.Module) -> BackboneWithFPN:
    strides = (8, 16, 32)
    return BackboneWithFPN(
        backbone.layers,
        {backbone.last_at(s): str(i) for i, s in enumerate(strides)},
        [backbone.channels_at(s) for s in strides],
        channels,
        extra_blocks=extra,
    )


def _fcos(backbone: Backbone, num_classes: int, channels: int) -> nn.Module:
    anchors = AnchorGenerator(((8,), (16,), (32,), (64,), (128,)), ((1.0,),) * 5)
    fpn = _fpn(backbone, channels, LastLevelP6P7(channels, channels))
    return FCOS(fpn, num_classes, anchor_generator=anchors)


def _retinanet(backbone: Backbone, num_classes: int, channels: int) -> nn.Module:
    sizes = tuple(
        (x, int(x * 2 ** (1 / 3)), int(x * 2 ** (2 / 3))) for x in (32, 64, 128, 256, 512)
    )
    anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
    fpn = _fpn(backbone, channels, LastLevelP6P7(channels, channels))
    head = RetinaNetHead(
        channels,
        anchors.num_anchors_per_location()[0],
        num_classes,
        norm_layer=functools.partial(nn.GroupNorm, 32),
    )
    return RetinaNet(fpn, num_classes, anchor_generator=anchors, head=head)


def _fasterrcnn(backbone: Backbone, num_classes: int, channels: int) -> nn.Module:
    anchors = AnchorGenerator(((32,), (64,), (128,), (256,)), ((0.5, 1.0, 2.0),) * 4)
    roi_pool = MultiScaleRoIAlign(["0", "1", "2"], output_size=7, sampling_ratio=2)
    fpn = _fpn(backbone, channels, LastLevelMaxPool())
    return FasterRCNN(fpn, num_classes, rpn_anchor_generator=anchors, box_roi_pool=roi_pool)


_SSD_NORM = functools.partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)


class SSDLiteFeatures(nn.Module):
    """C4 and C5 of the backbone, then extra stride-2 layers (1x1 reduce, 3x3 depthwise, 1x1)."""

    def __init__(self, backbone: Backbone, extra_channels: Sequence[int]) -> None:
        super().__init__()
        self.body = StageOutputs(
            backbone.layers, {backbone.last_at(16): "0", backbone.last_at(32): "1"}
        )
        self.extra = nn.ModuleList()
        width = backbone.channels_at(32)
        for out in extra_channels:
            mid = out // 2
            self.extra.append(
                nn.Sequential(
                    Conv2dNormActivation(
                        width, mid, 1, norm_layer=_SSD_NORM, activation_layer=nn.ReLU6
                    ),
                    Conv2dNormActivation(
                        mid,
                        mid,
                        3,
                        stride=2,
                        groups=mid,
                        norm_layer=_SSD_NORM,
                        activation_layer=nn.ReLU6,
                    ),
                    Conv2dNormActivation(
                        mid, out, 1, norm_layer=_SSD_NORM, activation_layer=nn.ReLU6
                    ),
                )
            )
            width = out
        self.out_channels = [backbone.channels_at(16), backbone.channels_at(32), *extra_channels]

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        features = list(self.body(x).values())
        for block in self.extra:
            features.append(block(features[-1]))
        return OrderedDict((str(i), f) for i, f in enumerate(features))


def _ssdlite(backbone: Backbone, num_classes: int, size: int) -> nn.Module:
    features = SSDLiteFeatures(backbone, SSDLITE_EXTRA_CHANNELS)
    anchors = DefaultBoxGenerator(
        [[2, 3]] * len(features.out_channels), min_ratio=0.2, max_ratio=0.95
    )
    head = SSDLiteHead(
        features.out_channels, anchors.num_anchors_per_location(), num_classes, _SSD_NORM
    )
    return SSD(features, anchors, (size, size), num_classes, head=head)


def build_architecture(
    arch: str, backbone: Backbone, num_classes: int, size: int, fpn_channels: int
) -> nn.Module:
    """torchvision's ``arch`` on ``backbone`` for ``num_classes`` outputs (background included
    where the architecture has one) and square inputs of ``size``."""
    if arch == "ssdlite":
        return _ssdlite(backbone, num_classes, size)
    build = {"fcos": _fcos, "retinanet": _retinanet, "fasterrcnn": _fasterrcnn}[arch]
    return build(backbone, num_classes, fpn_channels)


def detection_transform(arch: str, size: int, mean: list[float], std: list[float]) -> nn.Module:
    """Normalisation, and a resize that leaves a square ``size`` input as it is."""
    if arch == "ssdlite":  # SSD takes exactly its size
        return GeneralizedRCNNTransform(
            size, size, mean, std, size_divisible=1, fixed_size=(size, size)
        )
    return GeneralizedRCNNTransform(size, size, mean, std)
