"""Registry, ModelSpec, simple_cnn, torchvision and timm models."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

import cnnkit.models as models
from cnnkit.errors import CnnkitError
from cnnkit.models import (
    ModelSpec,
    create_model,
    list_models,
    model_input_size,
    resolve_spec,
    summarize,
)

SIMPLE_CNN_YAML = Path(models.__file__).parent / "simple_cnn.yaml"


def _n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_simple_cnn_matches_the_keras_model():
    model = create_model("simple_cnn", 10, (3, 32, 32))
    assert _n_params(model) == 160_202
    assert model(torch.zeros(4, 3, 32, 32)).shape == (4, 10)
    summary = summarize(model, (3, 32, 32))
    assert summary.total_params == summary.trainable_params == 160_202
    assert sum(r.params for r in summary.rows) == 160_202
    shapes = [r.output_shape for r in summary.rows if r.type not in ("ReLU",)]
    assert shapes == [
        (32, 30, 30),
        (32, 15, 15),
        (64, 13, 13),
        (64, 6, 6),
        (128, 4, 4),
        (128, 2, 2),
        (512,),
        (128,),
        (10,),
    ]
    assert summary.rows[0].name == "conv2d_1"
    text = str(summary)
    assert "conv2d_1 (Conv2d)" in text and "(32, 30, 30)" in text
    assert "Total params: 160,202" in text
    assert model.training  # summarize restores the mode


def test_simple_cnn_yaml_twin_builds_the_same_module():
    from_yaml = create_model(SIMPLE_CNN_YAML, 10)
    builtin = create_model("simple_cnn", 10)
    assert _n_params(from_yaml) == 160_202
    assert [(k, v.shape) for k, v in from_yaml.state_dict().items()] == [
        (k, v.shape) for k, v in builtin.state_dict().items()
    ]


def test_simple_cnn_dropout_option():
    model = create_model(resolve_spec("simple_cnn", dropout=0.5), 10)
    names = [n for n, _ in model.named_children()]
    assert names[-2:] == ["dropout_1", "dense_2"]
    assert model.dropout_1.p == 0.5
    assert _n_params(model) == 160_202
    with pytest.raises(CnnkitError, match="dropout must be a number"):
        create_model(ModelSpec("simple_cnn", options={"dropout": 2}), 10)


@pytest.mark.parametrize("name", ["simple_cnn", "resnet18"])
def test_spec_round_trips_and_rebuilds_identical_state_dict_keys(name):
    spec = resolve_spec(name)
    again = ModelSpec.from_dict(spec.to_dict())
    assert again == spec
    a, b = create_model(spec, 7), create_model(again, 7)
    assert [(k, v.shape) for k, v in a.state_dict().items()] == [
        (k, v.shape) for k, v in b.state_dict().items()
    ]


def test_layer_spec_round_trips_through_torch_save(tmp_path):
    spec = resolve_spec("conv2d:8:3:padding=same,batchnorm,relu,global_avg_pool,dense,softmax")
    model = create_model(spec, 4)
    path = tmp_path / "ckpt.pt"
    torch.save({"model": spec.to_dict(), "state_dict": model.state_dict()}, path)
    ckpt = torch.load(path, weights_only=True)
    rebuilt = create_model(ModelSpec.from_dict(ckpt["model"]), 4)
    rebuilt.load_state_dict(ckpt["state_dict"])  # strict: same keys and shapes
    model.eval()
    rebuilt.eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(model(x), rebuilt(x))


def test_unknown_model_suggests_a_close_name():
    with pytest.raises(CnnkitError, match="did you mean 'resnet18'") as info:
        create_model("resnet81", 10)
    assert "\n" not in str(info.value)
    with pytest.raises(CnnkitError, match="has no option 'dropot' \\(valid: dropout\\)"):
        resolve_spec("simple_cnn", dropot=0.5)
    with pytest.raises(CnnkitError, match="has no option 'foo'"):
        resolve_spec("resnet18", foo=1)
    with pytest.raises(CnnkitError, match="takes no options"):
        resolve_spec("flatten,dense", dropout=0.5)


def test_list_models_builtins_first_then_torchvision():
    listed = list_models()
    names = [n for n, _ in listed]
    assert names[0] == "simple_cnn"
    for name in ("resnet18", "resnet50", "vgg16", "mobilenet_v3_small", "inception_v3"):
        assert name in names
    assert all(desc and "\n" not in desc for _, desc in listed)
    assert len(names) == len(set(names))


@pytest.mark.parametrize("name", ["resnet18", "vgg16", "mobilenet_v3_small"])
def test_torchvision_models_build_and_run_at_32(name):
    torch.manual_seed(0)
    model = create_model(name, 7, (3, 32, 32))
    model.eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 7)
    assert model_input_size(resolve_spec(name), (32, 32)) == (32, 32)
    summary = summarize(model, (3, 32, 32))
    assert summary.total_params == _n_params(model)
    assert summary.rows[-1].output_shape == (7,)


def test_torchvision_options_pass_through():
    model = create_model(resolve_spec("mobilenet_v3_small", dropout=0.1), 3)
    assert any(isinstance(m, torch.nn.Dropout) and m.p == 0.1 for m in model.modules())


def test_model_input_size_respects_minimums():
    assert model_input_size(resolve_spec("inception_v3"), (32, 32)) == (299, 299)
    assert model_input_size(resolve_spec("inception_v3"), (128, 96)) == (128, 96)
    assert model_input_size(resolve_spec("alexnet"), (32, 32)) == (63, 63)
    assert model_input_size(resolve_spec("vit_b_16"), (32, 32)) == (224, 224)
    assert model_input_size(resolve_spec("simple_cnn"), (48, 40)) == (48, 40)
    assert model_input_size(resolve_spec("flatten,dense"), (20, 20)) == (20, 20)


def test_inception_v3_returns_plain_logits():
    model = create_model("inception_v3", 5, (3, 75, 75))
    model.train()
    out = model(torch.zeros(2, 3, 75, 75))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 5)


def test_bad_sizes_are_user_errors():
    with pytest.raises(CnnkitError, match="num_classes"):
        create_model("simple_cnn", 0)
    with pytest.raises(CnnkitError, match="3-channel"):
        create_model("resnet18", 10, (1, 32, 32))
    with pytest.raises(CnnkitError, match="cannot run on a 3x8x8 input"):
        summarize(create_model("alexnet", 10), (3, 8, 8))


@pytest.mark.skipif(importlib.util.find_spec("timm") is None, reason="timm not installed")
def test_timm_models():
    model = create_model("timm:resnet18", 6, (3, 32, 32))
    model.eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 6)
    assert resolve_spec("timm:resnet18").name == "timm:resnet18"
    with pytest.raises(CnnkitError, match="did you mean 'resnet18'"):
        resolve_spec("timm:resnt18")
    assert model_input_size(resolve_spec("timm:vit_tiny_patch16_224"), (32, 32)) == (224, 224)
