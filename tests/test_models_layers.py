"""Layer specs: formats, shape inference, clear errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml

from cnnkit.errors import CnnkitError
from cnnkit.models import LAYER_TYPES, build_layers, create_model, parse_layers, resolve_spec

# Even kernels with padding 'same' make torch pad a copy of the input; expected here.
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same'")

STRING = "conv2d:32:3,relu,maxpool2d:2,flatten,dense:128,relu,dropout:0.5,dense"
STRINGS = STRING.split(",")
DICTS = [
    {"type": "conv2d", "filters": 32, "kernel": 3},
    {"type": "relu"},
    {"type": "maxpool2d", "size": 2},
    {"type": "flatten"},
    {"type": "dense", "units": 128},
    {"type": "relu"},
    {"type": "dropout", "rate": 0.5},
    {"type": "dense"},
]
KERAS_YAML = """
layers:
  - conv2d: {filters: 32, kernel: 3}
  - relu
  - maxpool2d: 2
  - flatten
  - dense: 128
  - relu
  - dropout: 0.5
  - dense
"""


def _shapes(model: torch.nn.Module) -> list[tuple[str, tuple]]:
    return [(k, tuple(v.shape)) for k, v in model.state_dict().items()]


def test_all_formats_normalise_and_build_the_same(tmp_path):
    path = tmp_path / "net.yaml"
    path.write_text(KERAS_YAML)
    keras_list = yaml.safe_load(KERAS_YAML)["layers"]
    expected = parse_layers(STRING)
    assert expected[0] == {
        "type": "conv2d",
        "filters": 32,
        "kernel": 3,
        "stride": 1,
        "padding": "valid",
        "bias": True,
    }
    assert expected[-1] == {"type": "dense", "units": None, "bias": True}
    for spec in (STRINGS, DICTS, keras_list, {"layers": DICTS}):
        assert parse_layers(spec) == expected
    assert parse_layers(expected) == expected  # idempotent
    assert resolve_spec(path).layers == expected
    assert resolve_spec(str(path)).layers == expected
    assert resolve_spec(STRING).layers == expected
    reference = _shapes(build_layers(STRING, (3, 32, 32), 10))
    for spec in (STRINGS, DICTS, keras_list):
        assert _shapes(build_layers(spec, (3, 32, 32), 10)) == reference
    model = create_model(path, 10)
    assert [n for n, _ in model.named_children()][:3] == ["conv2d_1", "relu_1", "maxpool2d_1"]
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_keyword_args_and_activation_expansion():
    layers = parse_layers("conv2d:16:kernel=5:padding=same:activation=relu,flatten,dense")
    assert layers[0]["kernel"] == 5 and layers[0]["padding"] == "same"
    assert layers[1] == {"type": "relu"}
    keras = parse_layers([{"dense": {"units": 10, "activation": "softmax"}}])
    assert [x["type"] for x in keras] == ["dense", "softmax"]
    assert parse_layers("MaxPooling2D:2,BatchNormalization,linear:4")[0]["type"] == "maxpool2d"


@pytest.mark.parametrize(
    "spec, size",
    [
        (
            "conv2d:8:3:1:same,batchnorm,relu,conv2d:16:3:2:same,maxpool2d:2:padding=same,"
            "avgpool2d:3:1:1,dropout2d:0.1,flatten,dense:32,batchnorm,gelu,dense",
            (3, 33, 31),
        ),
        ("conv2d:8:3x5:2,leaky_relu:0.2,maxpool2d:3:2,flatten,dense", (3, 40, 36)),
        ("conv2d:8:4:padding=same,silu,avgpool2d:2,global_avg_pool,dense:12,tanh,dense", (3, 9, 9)),
        (
            "conv2d:8:3,sigmoid,maxpool2d:2:padding=same,global_max_pool,identity,dense,softmax",
            (3, 4, 4),
        ),
    ],
)
def test_inferred_shapes_match_a_real_forward(spec, size):
    model = build_layers(spec, size, 5)
    model.eval()
    assert model(torch.randn(2, *size)).shape == (2, 5)


def test_softmax_is_kept_in_the_spec_but_not_the_module():
    spec = resolve_spec("flatten,dense,softmax")
    assert spec.layers[-1] == {"type": "softmax"}
    model = create_model(spec, 3, (3, 4, 4))
    assert not any(isinstance(m, torch.nn.Softmax) for m in model.modules())


def test_fully_convolutional_output_is_accepted_when_it_has_the_class_width():
    model = build_layers("conv2d:7:1,global_avg_pool", (3, 8, 8), 7)
    assert model(torch.zeros(1, 3, 8, 8)).shape == (1, 7)


@pytest.mark.parametrize(
    "spec, size, message",
    [
        (
            "conv2d:32:3,maxpool2d,conv2d:64:3,maxpool2d,conv2d:64:3,conv2d:64:3,flatten,dense",
            (3, 16, 16),
            "conv2d kernel 3 on a 2x2 input",
        ),
        ("conv2d:32:3,relu,dense", (3, 32, 32), "add flatten or global_avg_pool before dense"),
        ("conv2d:32:3,flatten,dense:5", (3, 8, 8), "the last dense has 5 units but there are 10"),
        ("conv2d:32:3,flatten", (3, 8, 8), "the last layer must be dense"),
        ("flatten,dense,softmax,relu", (3, 8, 8), "softmax must be the last layer"),
        ("flatten,dense,dense", (3, 8, 8), "only the last dense may omit them"),
        ("flatten,dropout2d,dense", (3, 8, 8), "dropout2d needs an image input"),
        ("conv2d:8:4:2:same,flatten,dense", (3, 8, 8), "needs an odd kernel"),
        ("relux,flatten,dense", (3, 8, 8), "unknown layer type 'relux'; did you mean 'relu'?"),
        ("conv2d,flatten,dense", (3, 8, 8), "conv2d needs filters"),
        ("conv2d:abc,flatten,dense", (3, 8, 8), "filters must be a positive integer"),
        ("conv2d:8:3:1:same:true:9,flatten,dense", (3, 8, 8), "takes at most 5 arguments"),
        ("flatten,dropout:1.5,dense", (3, 8, 8), "rate must be a number in [0, 1)"),
        ("flatten,dense:activation=swirl", (3, 8, 8), "unknown activation 'swirl'"),
    ],
)
def test_errors_are_clear_one_liners(spec, size, message):
    with pytest.raises(CnnkitError) as info:
        build_layers(spec, size, 10)
    text = str(info.value)
    assert message in text
    assert "\n" not in text


def test_bad_argument_name_lists_valid_ones():
    with pytest.raises(CnnkitError, match=r"no argument 'filter' \(valid: filters, kernel"):
        parse_layers([{"conv2d": {"filter": 32}}])


def test_yaml_errors(tmp_path):
    with pytest.raises(CnnkitError, match="model file not found"):
        resolve_spec(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yml"
    bad.write_text("layers: [conv2d: {filters: 8}, flatten, dense")
    with pytest.raises(CnnkitError, match="cannot read model file"):
        resolve_spec(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(CnnkitError, match="must hold a list of layers"):
        resolve_spec(scalar)


def test_every_layer_type_is_documented():
    """Each layer type has a description and a row of README's layer table naming its
    arguments; the table names no type that does not exist."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("Layer types and their positional arguments", 1)[1]
    table = section.split("\n\n", 2)[1].splitlines()
    cells = [re.split(r"(?<!\\)\|", line) for line in table if line.startswith("| `")]
    documented = {name: row[2] for row in cells for name in re.findall(r"`(\w+)`", row[1])}
    assert set(documented) == set(LAYER_TYPES)
    for name, layer_type in LAYER_TYPES.items():
        assert layer_type.description, name
        arguments = documented[name]
        for param in layer_type.param_names:
            assert param in arguments, (name, param)
