"""TransferModel: a pretrained backbone plus a new head, with freezing and discriminative LRs.

The backbone maps images to features, either pooled ``(N, F)`` or a feature map
``(N, C, H, W)``; the head is an ``nn.Sequential`` built from a cnnkit layer spec. ``blocks()``
lists the backbone's stages in input -> output order; ``freeze(k)`` leaves only the last ``k``
trainable. Frozen parts stay in eval mode under ``train()``, so BatchNorm running statistics
(and dropout / stochastic depth) never move while frozen and their features can be cached.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from cnnkit.errors import CnnkitError
from cnnkit.models.layers import build_layers, parse_layers
from cnnkit.models.staged import batchnorm_to_eval, block_lr_groups, check_trainable_blocks

DEFAULT_HEAD = "dropout:0.2,dense"
# A head whose layers before the first dense include one of these needs a feature map.
SPATIAL_LAYERS = frozenset(
    {"flatten", "conv2d", "maxpool2d", "avgpool2d", "dropout2d"}
    | {"global_avg_pool", "global_max_pool"}
)
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)


def is_spatial_head(head: str | Sequence | None) -> bool:
    """Whether ``head`` needs the backbone's feature map rather than its pooled features."""
    if head is None:
        return False
    for layer in parse_layers(head):
        if layer["type"] == "dense":
            return False
        if layer["type"] in SPATIAL_LAYERS:
            return True
    return False


def kept_classifier_head(classifier: nn.Module | None, num_classes: int, dropout: float) -> str:
    """The head spec that holds a model's own pretrained classifier (``keep_classifier``):
    ``[dropout:p,] dense``; the classifier must be one Linear with ``num_classes`` outputs."""
    if not isinstance(classifier, nn.Linear):
        raise CnnkitError("keep_classifier: this model's classifier is not a single Linear layer")
    if classifier.out_features != num_classes:
        raise CnnkitError(
            f"keep_classifier needs num_classes={classifier.out_features} (the pretrained "
            f"classifier's), got {num_classes}"
        )
    return f"dropout:{dropout},dense" if dropout > 0 else "dense"


class Block(nn.Module):
    """A view grouping existing modules (and loose parameters) into one backbone stage.

    It is never registered inside the model, so it adds no state_dict keys; ``train()`` and
    ``parameters()`` reach the grouped modules.
    """

    def __init__(self, modules: Iterable[nn.Module], params: Iterable[nn.Parameter] = ()) -> None:
        super().__init__()
        self.parts = nn.ModuleList(modules)
        self.loose = nn.ParameterList(params)

    def forward(self, x: Any) -> Any:  # pragma: no cover - a view, not a layer
        raise TypeError("a Block groups modules for freezing; it is not callable")


def _has_params(module: nn.Module) -> bool:
    return next(module.parameters(), None) is not None


def group_children(items: Sequence[nn.Module]) -> list[list[nn.Module]]:
    """Group consecutive modules into blocks: a block starts at a module with parameters that is
    not a normalisation layer; parameterless modules and norms join the block before them."""
    groups: list[list[nn.Module]] = []
    pending: list[nn.Module] = []  # parameterless modules before the first block
    for module in items:
        starts = _has_params(module) and not isinstance(module, _NORMS)
        if starts or (not groups and _has_params(module)):
            groups.append([*pending, module])
            pending = []
        elif groups:
            groups[-1].append(module)
        else:
            pending.append(module)
    return groups


def blocks_from_groups(root: nn.Module, groups: Sequence[Sequence[nn.Module]]) -> list[nn.Module]:
    """One module per group (the module itself when alone); parameters of ``root`` outside every
    group (e.g. a ViT class token) join the first block."""
    covered = {id(p) for group in groups for m in group for p in m.parameters()}
    loose = [p for p in root.parameters() if id(p) not in covered]
    blocks: list[nn.Module] = []
    for i, group in enumerate(groups):
        extra = loose if i == 0 else []
        blocks.append(group[0] if len(group) == 1 and not extra else Block(group, extra))
    return blocks


def blocks_from_param_groups(root: nn.Module, groups: Sequence[Sequence[str]]) -> list[nn.Module]:
    """Blocks from ordered groups of parameter names (timm's ``group_matcher``): each block holds
    the largest submodules whose parameters all lie in its group, plus loose parameters."""
    named = dict(root.named_parameters())
    group_of = {name: i for i, names in enumerate(groups) for name in names if name in named}
    under: dict[str, set[int]] = {}  # module prefix -> groups of the parameters below it
    for name, g in group_of.items():
        parts = name.split(".")[:-1]
        for depth in range(len(parts) + 1):
            under.setdefault(".".join(parts[:depth]), set()).add(g)
    modules = dict(root.named_modules())
    owned: list[list[nn.Module]] = [[] for _ in groups]
    loose: list[list[nn.Parameter]] = [[] for _ in groups]
    for prefix, module in modules.items():
        gs = under.get(prefix)
        parent = prefix.rpartition(".")[0] if prefix else None
        if gs and len(gs) == 1 and (parent is None or len(under.get(parent, ())) > 1):
            owned[next(iter(gs))].append(module)
    for name, g in group_of.items():
        prefix = name.rpartition(".")[0]
        if len(under.get(prefix, ())) > 1:  # held directly by a module spanning several groups
            loose[g].append(named[name])
    return [
        Block(mods, params) for mods, params in zip(owned, loose, strict=True) if mods or params
    ]


def _unwrap(module: nn.Module) -> list[nn.Module]:
    return list(module.parts) if isinstance(module, Block) else [module]


class TransferModel(nn.Module):
    """``head(backbone(x))``: a (pretrained) backbone and a new classifier head."""

    def __init__(
        self,
        backbone: nn.Module,
        head: str | Sequence | nn.Sequential | None,
        num_classes: int,
        input_size: tuple[int, int, int],
        *,
        blocks: Sequence[nn.Module],
        pooled: bool,
        kept_classifier: nn.Linear | None = None,
    ) -> None:
        """`head` None: DEFAULT_HEAD. `kept_classifier`: a pretrained Linear whose weights go
        into the head's last layer (``keep_classifier``; see kept_classifier_head)."""
        super().__init__()
        self.backbone = backbone
        self.backbone_pooled = bool(pooled)
        self.feature_shape = self._probe(tuple(int(d) for d in input_size))
        if pooled and len(self.feature_shape) != 1:
            raise CnnkitError(f"backbone features are {self.feature_shape}, expected pooled (F,)")
        self.head = (
            head
            if isinstance(head, nn.Sequential)
            else build_head(head, self.feature_shape, num_classes)
        )
        if kept_classifier is not None:
            self.head[-1].load_state_dict(kept_classifier.state_dict())
        # Blocks are kept as module/parameter names and resolved on use, so they stay right
        # after deepcopy, load_state_dict(assign=True) or parameter swaps; never registered.
        modules = {id(m): n for n, m in self.named_modules()}
        params = {id(p): n for n, p in self.named_parameters()}
        self._block_names = [
            (
                [modules[id(m)] for m in _unwrap(b)],
                [params[id(p)] for p in (b.loose if isinstance(b, Block) else ())],
            )
            for b in blocks
        ]
        self.trainable_blocks: int | str = "all"

    def _probe(self, input_size: tuple[int, ...]) -> tuple[int, ...]:
        modes = [(m, m.training) for m in self.backbone.modules()]
        self.backbone.eval()
        try:
            with torch.no_grad():
                out = self.backbone(torch.zeros(1, *input_size))
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CnnkitError(
                f"the backbone cannot run on a {'x'.join(map(str, input_size))} input ({first})"
            ) from None
        finally:
            for m, mode in modes:
                m.training = mode
        if not isinstance(out, torch.Tensor):
            raise CnnkitError(f"the backbone returns {type(out).__name__}, not a tensor")
        return tuple(int(d) for d in out.shape[1:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def blocks(self) -> list[nn.Module]:
        """The backbone's stages, input -> output (a ``Block`` groups several modules)."""
        out: list[nn.Module] = []
        for module_names, param_names in self._block_names:
            mods = [self.get_submodule(n) for n in module_names]
            loose = [self.get_parameter(n) for n in param_names]
            out.append(mods[0] if len(mods) == 1 and not loose else Block(mods, loose))
        return out

    def freeze(self, trainable_blocks: int | str = 0) -> None:
        """0: backbone frozen; k: only its last k blocks trainable (k >= the number of blocks is
        everything); "all": everything trainable. The head is always trainable."""
        blocks = self.blocks()
        n = len(blocks)
        k = check_trainable_blocks(trainable_blocks, n)
        self.backbone.requires_grad_(k == "all")
        if k != "all":
            for block in blocks[n - k :] if k else []:
                block.requires_grad_(True)
        self.head.requires_grad_(True)
        self.trainable_blocks = k
        self.train(self.training)  # frozen parts switch to eval now

    def frozen_modules(self) -> list[nn.Module]:
        """The modules kept frozen (and in eval mode) by the last ``freeze``."""
        k = self.trainable_blocks
        if k == "all":
            return []
        if k == 0:
            return [self.backbone]
        blocks = self.blocks()
        return [m for block in blocks[: len(blocks) - int(k)] for m in _unwrap(block)]

    # Pretrained backbones keep BatchNorm in inference mode even when unfrozen (the Keras
    # fine-tuning advice): batch statistics of a small new dataset would overwrite ImageNet's
    # running statistics and wreck the features in the first fine-tuning steps. Its affine
    # weights still train. The trainer sets this for pretrained weights only: a randomly
    # initialised backbone needs batch statistics.
    backbone_bn_eval: bool = False

    def train(self, mode: bool = True) -> TransferModel:
        """``nn.Module.train``, but frozen parts stay in eval mode (BatchNorm stats, dropout),
        and so does the backbone's BatchNorm when ``backbone_bn_eval`` is set."""
        super().train(mode)
        if mode:
            for module in self.frozen_modules():
                module.train(False)
            if self.backbone_bn_eval:
                batchnorm_to_eval([self.backbone])
        return self

    def param_groups(self, lr: float, backbone_lr_ratio: float = 0.1) -> list[dict]:
        """Optimiser groups: the head at ``lr``; trainable backbone blocks from the last at
        ``lr * ratio`` down geometrically to the first at ``lr * ratio**2``."""
        seen: set[int] = set()

        def take(params: Iterable[nn.Parameter]) -> list[nn.Parameter]:
            out = [p for p in params if p.requires_grad and id(p) not in seen]
            seen.update(id(p) for p in out)
            return out

        groups = [{"params": take(self.head.parameters()), "lr": lr, "name": "head"}]
        trainable = [
            (i, b)
            for i, b in enumerate(self.blocks())
            if any(p.requires_grad for p in b.parameters())
        ]
        n = len(trainable)
        taken = {i: take(block.parameters()) for i, block in reversed(trainable)}
        groups += block_lr_groups([(i, taken[i]) for i, _ in trainable], lr, backbone_lr_ratio)
        rest = take(self.backbone.parameters())
        if rest:  # trainable backbone parameters outside every block (none for built-ins)
            low = lr * backbone_lr_ratio ** (2.0 if n > 1 else 1.0)
            groups.append({"params": rest, "lr": low, "name": "backbone"})
        return [g for g in groups if g["params"]]


def build_head(
    head: str | Sequence | None, feature_shape: tuple[int, ...], num_classes: int
) -> nn.Sequential:
    """The head layers on ``feature_shape``: (C, H, W) maps, or pooled (F,) features."""
    layers = parse_layers(head if head is not None else DEFAULT_HEAD)
    if len(feature_shape) == 3:
        return build_layers(layers, feature_shape, num_classes)
    if len(feature_shape) != 1:
        raise CnnkitError(
            f"the backbone gives features of shape {feature_shape}, not a (C, H, W) feature map "
            f"for a spatial head (flatten/conv2d/pooling); start the head with dense or dropout"
        )
    # build_layers takes (C, H, W): build on (F, 1, 1) behind a flatten, then drop the flatten.
    seq = build_layers([{"type": "flatten"}, *layers], (feature_shape[0], 1, 1), num_classes)
    return nn.Sequential(OrderedDict(list(seq.named_children())[1:]))
