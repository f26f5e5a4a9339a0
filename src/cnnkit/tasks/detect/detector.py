"""DetectionModel: a torchvision detector behind cnnkit's contract, with freezing and per-block LRs.

Labels are 0-based class indices in and out (an architecture that reserves 0 for the background
sees labels + ``label_offset``); images are float (3, H, W) in [0, 1], a list or a (B, 3, H, W)
batch (uint8 is scaled). The backbone's blocks are its stride stages, named by module path in
the torchvision model; ``freeze(k)`` leaves the last k trainable, like ``TransferModel``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from cnnkit.models.staged import batchnorm_to_eval, block_lr_groups, check_trainable_blocks
from cnnkit.tasks.detect.dataset import BoxTarget
from cnnkit.tasks.detect.postprocess import PostProcess, apply_postprocess


class DetectionModel(nn.Module):
    """A torchvision detector speaking cnnkit's contract (0-based labels, [0, 1] images), with
    freezing and per-block learning rates over its backbone's stride stages."""

    backbone_bn_eval: bool = False  # keep the backbone's BatchNorm in eval mode (pretrained)

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
        the input's pixels), scores and 0-based labels, best first."""
        batch = [_as_float(image) for image in images]
        if self.training:
            if targets is None or len(targets) != len(batch):
                raise ValueError("a detector in train mode needs one target per image")
            device = batch[0].device
            return self.model(batch, [self._model_target(t, device) for t in targets])
        out = self.model(batch)
        return [
            {
                "boxes": d["boxes"].float(),  # float32 also under bf16 autocast
                "scores": d["scores"].float(),
                "labels": d["labels"] - self.label_offset,
            }
            for d in out
        ]

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

    # -- freezing and learning rates --

    def blocks(self) -> list[list[nn.Module]]:
        """The backbone's stride stages, input -> output, each a list of its layers."""
        return [[self.model.get_submodule(n) for n in names] for names in self._block_names]

    def _block_params(self, block: Iterable[nn.Module]) -> list[nn.Parameter]:
        return [p for layer in block for p in layer.parameters()]

    def freeze(self, trainable_blocks: int | str = 0) -> None:
        """0: backbone frozen; k: only its last k stride stages train; "all": all of it. The
        feature pyramid, extra layers and heads always train."""
        blocks = self.blocks()
        n = len(blocks)
        k = check_trainable_blocks(trainable_blocks, n)
        frozen = 0 if k == "all" else n - int(k)
        for i, block in enumerate(blocks):
            for p in self._block_params(block):
                p.requires_grad_(i >= frozen)
        self.trainable_blocks = k
        self.train(self.training)

    def frozen_modules(self) -> list[nn.Module]:
        """The backbone layers the last ``freeze`` froze (kept in eval mode)."""
        if self.trainable_blocks == "all":
            return []
        blocks = self.blocks()
        return [m for block in blocks[: len(blocks) - int(self.trainable_blocks)] for m in block]

    def train(self, mode: bool = True) -> DetectionModel:
        """``nn.Module.train``, but frozen layers stay in eval mode, and so does all the
        backbone's BatchNorm when ``backbone_bn_eval`` (batches of a few images would wreck
        pretrained statistics; torchvision freezes them the same way)."""
        super().train(mode)
        if mode:
            for module in self.frozen_modules():
                module.train(False)
            if self.backbone_bn_eval:
                batchnorm_to_eval(layer for block in self.blocks() for layer in block)
        return self

    def param_groups(self, lr: float, backbone_lr_ratio: float = 0.1) -> list[dict]:
        """Optimiser groups: pyramid and heads at ``lr``; trainable backbone stages from the last
        at ``lr * ratio`` down geometrically to the first at ``lr * ratio**2``."""
        in_blocks = {id(p) for block in self.blocks() for p in self._block_params(block)}
        head = [p for p in self.parameters() if p.requires_grad and id(p) not in in_blocks]
        groups = [{"params": head, "lr": lr, "name": "head"}]
        trainable = [
            (i, params)
            for i, block in enumerate(self.blocks())
            if (params := [p for p in self._block_params(block) if p.requires_grad])
        ]
        groups += block_lr_groups(trainable, lr, backbone_lr_ratio)
        return [g for g in groups if g["params"]]


def _as_float(image: torch.Tensor) -> torch.Tensor:
    return image.float() / 255.0 if image.dtype == torch.uint8 else image
