"""Pretrained options in the registry: preprocessing, input sizes, weight files, offline errors."""

from __future__ import annotations

import pytest
import torch
import torchvision

from cnnkit.errors import CnnkitError
from cnnkit.models import (
    TransferModel,
    create_model,
    list_models,
    model_input_size,
    pretrained_classes,
    pretrained_preprocessing,
    resolve_spec,
    spec_for_rebuild,
    weights_file_name,
)
from cnnkit.models.torchvision_models import GoogleInput


def test_preprocessing_comes_from_the_weights():
    pre = pretrained_preprocessing(resolve_spec("resnet50", pretrained="imagenet"))
    t = torchvision.models.ResNet50_Weights.DEFAULT.transforms()
    assert pre.size == (t.crop_size[0],) * 2 == (224, 224)
    assert pre.resize == "crop" and pre.mean == pytest.approx((0.485, 0.456, 0.406))
    assert pre.std == pytest.approx((0.229, 0.224, 0.225))
    assert pre.extra["crop_pct"] == pytest.approx(t.crop_size[0] / t.resize_size[0])
    assert pre.extra["source"].startswith("torchvision:ResNet50_Weights")
    assert pre.interpolation == "bilinear"
    lite0 = pretrained_preprocessing(resolve_spec("efficientnet_lite0", pretrained="imagenet"))
    assert lite0.mean == (0.5, 0.5, 0.5) and lite0.size == (224, 224)
    assert pretrained_preprocessing(resolve_spec("resnet50")) is None
    assert pretrained_preprocessing(resolve_spec("simple_cnn")) is None
    small = pretrained_preprocessing(
        resolve_spec("efficientnet_lite0", pretrained="imagenet", input_size=128)
    )
    assert small.size == (128, 128)


def test_model_input_size_uses_the_weights_size_unless_overridden():
    def size(name, **options):
        return model_input_size(resolve_spec(name, **options), (32, 32))

    assert size("resnet18", pretrained="imagenet") == (224, 224)
    assert size("inception_v3", pretrained="imagenet") == (299, 299)
    assert size("resnet18", pretrained="imagenet", input_size=128) == (128, 128)
    assert size("efficientnet_lite0", pretrained="imagenet") == (224, 224)
    assert size("efficientnet_lite0", pretrained="imagenet", input_size=128) == (128, 128)
    assert size("efficientnet_lite0") == (32, 32)
    assert size("resnet18") == (32, 32)
    assert size("timm:resnet18", pretrained="imagenet") == (224, 224)


def test_classes_and_file_names():
    names = pretrained_classes(resolve_spec("resnet18", pretrained="imagenet"))
    assert len(names) == 1000 and names[285] == "Egyptian cat"
    assert pretrained_classes(resolve_spec("efficientnet_lite0", pretrained="imagenet")) == names
    assert pretrained_classes(resolve_spec("resnet18")) is None
    assert weights_file_name(resolve_spec("resnet18")) == "resnet18-f37072fd.pth"
    assert weights_file_name("timm:resnet18") == "resnet18.safetensors"
    assert "efficientnet_lite0" in [n for n, _ in list_models()]


def test_offline_without_weights_names_file_and_folder(empty_hub):
    with pytest.raises(CnnkitError) as info:
        create_model(resolve_spec("resnet18", pretrained="imagenet"), 10, (3, 64, 64))
    message = str(info.value)
    assert "resnet18-f37072fd.pth" in message and str(empty_hub) in message
    assert "\n" not in message
    with pytest.raises(CnnkitError, match=r"resnet18\.safetensors"):
        create_model(resolve_spec("timm:resnet18", pretrained="imagenet"), 10, (3, 64, 64))


def test_torchvision_weights_path_loads_exactly(empty_hub, tmp_path):
    torch.manual_seed(0)
    reference = torchvision.models.resnet18().eval()
    path = tmp_path / "mine.pth"
    torch.save(reference.state_dict(), path)
    x = torch.randn(2, 3, 64, 64)
    for keep in ({"keep_classifier": True}, {"head": "imagenet"}):
        spec = resolve_spec("resnet18", pretrained="imagenet", weights=str(path), **keep)
        model = create_model(spec, 1000, (3, 64, 64)).eval()
        with torch.no_grad():
            assert torch.equal(model(x), reference(x))
    transfer = create_model(resolve_spec("resnet18", weights=str(path)), 10, (3, 64, 64))
    ref_state = reference.state_dict()
    for key, value in transfer.backbone.state_dict().items():
        assert torch.equal(value, ref_state[key]), key


def test_timm_weights_path_loads_exactly(empty_hub, tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    reference = timm.create_model("resnet18", pretrained=False).eval()
    path = tmp_path / "timm_resnet18.pth"
    torch.save(reference.state_dict(), path)
    spec = resolve_spec("timm:resnet18", weights=str(path), keep_classifier=True)
    model = create_model(spec, 1000, (3, 64, 64)).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x))
    assert isinstance(model, TransferModel) and len(model.blocks()) == 5


def test_google_input_transform_matches_torchvision():
    model = torchvision.models.googlenet(aux_logits=False, init_weights=False, transform_input=True)
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(GoogleInput()(x), model._transform_input(x))
    spec = spec_for_rebuild(resolve_spec("inception_v3", pretrained="imagenet"))
    assert spec.options["transform_input"] is True and spec.options["transfer"] is True
    assert spec.options["input_size"] == 299
    plain = resolve_spec("resnet18")
    assert spec_for_rebuild(plain).to_dict() == plain.to_dict()


def test_bad_options_are_user_errors():
    with pytest.raises(CnnkitError, match="did you mean 'imagenet'"):
        create_model(resolve_spec("resnet18", pretrained="imagenett"), 10)
    with pytest.raises(CnnkitError, match="keep_classifier"):
        create_model(resolve_spec("resnet18", keep_classifier=True, head="dense"), 10)
    with pytest.raises(CnnkitError, match="no option 'foo'"):
        resolve_spec("efficientnet_lite0", foo=1)
    with pytest.raises(CnnkitError, match="input_size"):
        model_input_size(resolve_spec("resnet18", input_size="big"), (32, 32))
