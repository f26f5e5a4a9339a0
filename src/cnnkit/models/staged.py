"""What every model with a backbone in blocks shares: the classifier's ``TransferModel``, the
detectors' ``DetectionModel`` and the segmenters' ``SegmentationModel`` freeze their blocks,
keep a pretrained backbone's BatchNorm in eval mode and give each trainable block its own
learning rate by these rules, so that ``--unfreeze``, ``--backbone-lr-ratio`` and ``--freeze``
mean the same for every task. ``NamedBlocks`` holds them for a model whose blocks are named
submodules (the detectors and segmenters).
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from cnnkit.errors import CnnkitError


def check_trainable_blocks(value: int | str, n_blocks: int) -> int | str:
    """``value`` as a number of trainable blocks: 0..n-1, or "all" (also for k >= n)."""
    if value == "all":
        return "all"
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise CnnkitError(f"trainable blocks must be >= 0 or 'all', got {value}")
        return "all" if value >= n_blocks else value
    raise CnnkitError(f"trainable blocks must be an integer or 'all', got {value!r}")


def block_lr_groups(
    trainable: list[tuple[int, list[nn.Parameter]]], lr: float, backbone_lr_ratio: float
) -> list[dict]:
    """Optimiser groups for the trainable blocks ``(index, parameters)``, input -> output: the
    last at ``lr * ratio``, down geometrically to the first at ``lr * ratio**2``."""
    n = len(trainable)
    groups = []
    for rank, (i, params) in enumerate(reversed(trainable)):
        exponent = 1.0 + (rank / (n - 1) if n > 1 else 0.0)
        if params:
            groups.append(
                {"params": params, "lr": lr * backbone_lr_ratio**exponent, "name": f"block{i}"}
            )
    return groups


def batchnorm_to_eval(modules: Iterable[nn.Module]) -> None:
    """Every BatchNorm layer in ``modules`` (and below) to eval mode: a pretrained backbone keeps
    its running statistics, which a few small batches of new data would wreck."""
    for module in modules:
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.train(False)


class NamedBlocks:
    """Freezing, eval-mode rules and per-block learning rates for a module whose backbone
    blocks are lists of submodule names (``_block_names``, resolved under ``_blocks_root()``).
    Mix in before ``nn.Module``: ``class DetectionModel(NamedBlocks, nn.Module)``."""

    backbone_bn_eval: bool = False  # keep the backbone's BatchNorm in eval mode (pretrained)
    _block_names: list[list[str]]
    trainable_blocks: int | str

    def _blocks_root(self) -> nn.Module:
        return self  # type: ignore[return-value]

    def blocks(self) -> list[list[nn.Module]]:
        """The backbone's blocks, input -> output, each a list of its layers."""
        root = self._blocks_root()
        return [[root.get_submodule(n) for n in names] for names in self._block_names]

    @staticmethod
    def _block_params(block: Iterable[nn.Module]) -> list[nn.Parameter]:
        return [p for layer in block for p in layer.parameters()]

    def freeze(self, trainable_blocks: int | str = 0) -> None:
        """0: backbone frozen; k: only its last k blocks train; "all": all of it. Everything
        outside the backbone (pyramid, heads) always trains."""
        blocks = self.blocks()
        n = len(blocks)
        k = check_trainable_blocks(trainable_blocks, n)
        frozen = 0 if k == "all" else n - int(k)
        for i, block in enumerate(blocks):
            for p in self._block_params(block):
                p.requires_grad_(i >= frozen)
        self.trainable_blocks = k
        self.train(self.training)  # type: ignore[attr-defined]

    def frozen_modules(self) -> list[nn.Module]:
        """The backbone layers the last ``freeze`` froze (kept in eval mode)."""
        if self.trainable_blocks == "all":
            return []
        blocks = self.blocks()
        return [m for block in blocks[: len(blocks) - int(self.trainable_blocks)] for m in block]

    def train(self, mode: bool = True):  # noqa: ANN201 - returns self, like nn.Module.train
        """``nn.Module.train``, but frozen layers stay in eval mode, and so does all the
        backbone's BatchNorm when ``backbone_bn_eval`` (batches of a few images would wreck
        pretrained statistics; torchvision freezes them the same way)."""
        super().train(mode)  # type: ignore[misc]
        if mode:
            for module in self.frozen_modules():
                module.train(False)
            if self.backbone_bn_eval:
                batchnorm_to_eval(layer for block in self.blocks() for layer in block)
        return self

    def param_groups(self, lr: float, backbone_lr_ratio: float = 0.1) -> list[dict]:
        """Optimiser groups: everything outside the backbone at ``lr``; trainable backbone
        blocks from the last at ``lr * ratio`` down geometrically to the first at
        ``lr * ratio**2``."""
        in_blocks = {id(p) for block in self.blocks() for p in self._block_params(block)}
        own = self.parameters()  # type: ignore[attr-defined]
        head = [p for p in own if p.requires_grad and id(p) not in in_blocks]
        groups = [{"params": head, "lr": lr, "name": "head"}]
        trainable = [
            (i, params)
            for i, block in enumerate(self.blocks())
            if (params := [p for p in self._block_params(block) if p.requires_grad])
        ]
        groups += block_lr_groups(trainable, lr, backbone_lr_ratio)
        return [g for g in groups if g["params"]]
