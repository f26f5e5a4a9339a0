"""What every model with a backbone in blocks shares: the classifier's ``TransferModel`` and
the detectors' ``DetectionModel`` freeze their blocks, keep a pretrained backbone's BatchNorm in
eval mode and give each trainable block its own learning rate by these rules, so that
``--unfreeze``, ``--backbone-lr-ratio`` and ``--freeze`` mean the same for every task.
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
