"""SegmentationModel: any segmentation network behind one contract, and the parts it is made of.

The contract: images (B, 3, H, W), uint8 or float in [0, 1], in; logits (B, C, H, W) at the
input's size out (bilinear upsampling of the network's coarser output, as torchvision's
segmentation models do). Normalisation (the backbone's mean and std) happens inside, so a
predictor, an exported file and the training step all feed the same pixels.

Networks:

- ``FeatureHead``: a cnnkit backbone (a classifier's feature layers, see
  cnnkit.tasks.detect.backbones) read at its last layer, or also at stride 8 (LR-ASPP) or 4
  (DeepLabV3+), under one of torchvision's heads (``FCNHead``, ``DeepLabHead``, ``LRASPPHead``)
  or ``DeepLabV3PlusHead``.
  ``dilate`` turns the last stride stages into dilated ones for an output stride of 16 or 8.
- ``TorchvisionSegmenter``: one of torchvision's own segmentation models (its ``["out"]``).
- an ``nn.Sequential`` from layer specs (conv/pool down, upsample back: the tutorial's FCN).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.models.segmentation.deeplabv3 import ASPP

from cnnkit.models.staged import NamedBlocks


def dilate(layers: nn.Sequential, strides: Sequence[int], output_stride: int) -> None:
    """Make ``layers`` (a backbone ending at stride 32, each layer's output stride given) end
    at ``output_stride`` (16 or 8): in each stride stage past it the stride-2 convolutions take
    stride 1, the convolutions after them a doubled dilation (the strided ones keep the previous
    one), as torchvision's ResNet ``replace_stride_with_dilation`` does. That is the exact "a
    trous" conversion: the dilated network's outputs at every other position equal the strided
    network's (tested), so ImageNet weights keep their meaning. Padding follows the dilation;
    TF-"same" layers (padding 0, computed at run time) need none."""
    names = list(layers._modules)
    dilation = 1
    for stage_stride in (16, 32):
        if stage_stride <= output_stride:
            continue
        previous, dilation = dilation, dilation * 2
        seen_stride = False
        for name, stride in zip(names, strides, strict=True):
            if stride != stage_stride:
                continue
            for module in layers._modules[name].modules():
                if not isinstance(module, nn.Conv2d):
                    continue
                strided = module.stride != (1, 1)
                if strided:
                    module.stride = (1, 1)
                    seen_stride = True
                d = previous if strided or not seen_stride else dilation
                _set_dilation(module, d)


def _set_dilation(conv: nn.Conv2d, d: int) -> None:
    if conv.kernel_size == (1, 1):
        return
    dynamic = conv.padding == (0, 0) or conv.padding == "valid"  # TF "same" padded at run time
    conv.dilation = (d, d)
    if not dynamic:
        conv.padding = tuple(d * (k - 1) // 2 for k in conv.kernel_size)


class DeepLabV3PlusHead(nn.Module):
    """DeepLabV3+'s decoder (Chen et al., 2018): torchvision's ASPP over the last map, upsampled
    to the stride-4 map's size and joined with a 48-channel projection of it, two 3x3
    convolutions, the classifier. torchvision has DeepLabV3's head but not this decoder; the
    stride-4 features are what draw the boundaries that a stride-16 head blurs."""

    def __init__(
        self,
        fine_channels: int,
        high_channels: int,
        num_classes: int,
        channels: int = 128,
        rates: Sequence[int] = (6, 12, 18),
    ) -> None:
        super().__init__()
        self.aspp = ASPP(high_channels, list(rates), channels)
        self.project = nn.Sequential(
            nn.Conv2d(fine_channels, 48, 1, bias=False), nn.BatchNorm2d(48), nn.ReLU()
        )
        self.fuse = nn.Sequential(
            nn.Conv2d(channels + 48, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
        )
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        fine = self.project(features["fine"])
        high = self.aspp(features["high"])
        high = F.interpolate(high, size=fine.shape[-2:], mode="bilinear", align_corners=False)
        return self.classifier(self.fuse(torch.cat([high, fine], 1)))


class FeatureHead(nn.Module):
    """Backbone features -> a segmentation head -> coarse logits."""

    def __init__(self, body: nn.Module, head: nn.Module, two_levels: bool) -> None:
        super().__init__()
        # returns {"out": last map} and "low" (stride 8) or "fine" (stride 4) (StageOutputs)
        self.body = body
        self.head = head
        self.two_levels = two_levels  # LR-ASPP reads {"low", "high"}, DeepLabV3+ {"fine", "high"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.body(x)
        if self.two_levels:
            levels = {name: value for name, value in features.items() if name != "out"}
            return self.head({**levels, "high": features["out"]})
        return self.head(features["out"])


class TorchvisionSegmenter(nn.Module):
    """One of torchvision's segmentation models, giving its main output's logits."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["out"]


class SegmentationModel(NamedBlocks, nn.Module):
    """A segmentation network speaking cnnkit's contract ([0, 1] or uint8 images in, logits at
    the input's size out), with freezing and per-block learning rates over its backbone."""

    def __init__(
        self,
        net: nn.Module,
        *,
        spec: Any,  # the SegmenterSpec it was built from (cnnkit.tasks.segment.models)
        num_classes: int,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        blocks: Sequence[Sequence[str]],
    ) -> None:
        super().__init__()
        self.net = net
        self.spec = spec
        self.num_classes = num_classes
        self.image_size = image_size
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self._block_names = [list(b) for b in blocks]  # module names under self
        self.trainable_blocks: int | str = "all"

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images
        x = (x - self.mean) / self.std
        logits = self.net(x)
        if logits.shape[-2:] != x.shape[-2:]:
            logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return logits

    def record(self) -> dict:
        """What ``segmenter_from_record`` needs to rebuild this module (no weights fetched)."""
        return {
            "spec": self.spec.to_dict(),
            "num_classes": self.num_classes,
            "image_size": self.image_size,
        }
