"""DetectionModel: a torchvision detector behind cnnkit's contract, with freezing and per-block LRs.

Labels are 0-based class indices in and out (an architecture that reserves 0 for the background
sees labels + ``label_offset``); images are float (3, H, W) in [0, 1], a list or a (B, 3, H, W)
batch (uint8 is scaled). The backbone's blocks are its stride stages, named by module path in
the torchvision model; ``freeze(k)`` leaves the last k trainable, like ``TransferModel``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from cnnkit.models.staged import NamedBlocks
from cnnkit.tasks.detect.dataset import BoxTarget
from cnnkit.tasks.detect.postprocess import PostProcess, apply_postprocess, filter_detections


class DetectionModel(NamedBlocks, nn.Module):
    """A torchvision detector speaking cnnkit's contract (0-based labels, [0, 1] images), with
    freezing and per-block learning rates over its backbone's stride stages."""

    def __init__(
        self,
        model: nn.Module,
        *,
        spec: Any,  # the DetectorSpec it was built from (cnnkit.tasks.detect.models)
        num_classes: int,
        image_size: int,
        label_offset: int,
        blocks: Sequence[Sequence[str]],
        postprocess: PostProcess,
    ) -> None:
        super().__init__()
        self.model = model
        self.spec = spec
        self.num_classes = num_classes
        self.image_size = image_size
        self.label_offset = label_offset
        self._block_names = [list(b) for b in blocks]  # module names in self.model
        self.trainable_blocks: int | str = "all"
        self.postprocess = postprocess
        apply_postprocess(self, postprocess)

    # -- forward --

    def forward(
        self,
        images: torch.Tensor | Sequence[torch.Tensor],
        targets: Sequence[BoxTarget | dict] | None = None,
    ) -> dict[str, torch.Tensor] | list[dict[str, torch.Tensor]]:
        """Train mode: the named losses; eval mode: per image a dict of boxes (x1 y1 x2 y2 in
        the input's pixels), scores and 0-based labels, best first, as ``postprocess`` picks
        them."""
        batch = [_as_float(image) for image in images]
        if self.training:
            if targets is None or len(targets) != len(batch):
                raise ValueError("a detector in train mode needs one target per image")
            device = batch[0].device
            return self.model(batch, [self._model_target(t, device) for t in targets])
        out = [
            {
                "boxes": d["boxes"].float(),  # float32 also under bf16 autocast
                "scores": d["scores"].float(),
                "labels": d["labels"] - self.label_offset,
            }
            for d in self.model(batch)
        ]
        if self.postprocess.box_vote > 0:  # the heads handed over every candidate
            out = [filter_detections(d, self.postprocess) for d in out]
        return out

    def _model_target(self, target: BoxTarget | dict, device: torch.device) -> dict:
        """Crowd boxes are left out of training (COCO only ignores them in evaluation)."""
        if not isinstance(target, BoxTarget):
            target = BoxTarget(target["boxes"], target["labels"], target.get("iscrowd"))
        keep = ~target.iscrowd
        return {
            "boxes": target.boxes[keep].to(device),
            "labels": (target.labels[keep] + self.label_offset).to(device),
        }

    # -- rebuilding --

    def record(self) -> dict:
        """What ``detector_from_record`` needs to rebuild this module (no weights fetched)."""
        return {
            "spec": self.spec.to_dict(),
            "num_classes": self.num_classes,
            "image_size": self.image_size,
            "postprocess": self.postprocess.to_dict(),
        }

    def _blocks_root(self) -> nn.Module:
        return self.model


def _as_float(image: torch.Tensor) -> torch.Tensor:
    return image.float() / 255.0 if image.dtype == torch.uint8 else image
