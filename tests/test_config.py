"""The config: defaults < YAML < flags, and every bad value or key is one clear error."""

import pytest

from cnnkit.config import TrainConfig, build_config
from cnnkit.errors import CnnkitError


def test_yaml_values_override_defaults_and_flags_override_yaml(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("epochs: 3\nbatch-size: 16\nlr: 0.01\n")
    cfg = build_config(path, {"lr": 0.5})
    assert (cfg.epochs, cfg.batch_size, cfg.lr) == (3, 16, 0.5)
    assert cfg.optimizer == TrainConfig().optimizer


def test_unknown_key_in_file_is_rejected_with_close_match_and_valid_keys(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("epocs: 3\n")
    with pytest.raises(CnnkitError) as info:
        build_config(path)
    message = str(info.value)
    assert "epocs" in message and "did you mean 'epochs'" in message
    assert "batch_size" in message  # the valid keys are listed


@pytest.mark.parametrize(
    "values",
    [{"epochs": 0}, {"batch_size": -4}, {"lr": 0}, {"val_split": 1.0}, {"epochs": 1.5}],
)
def test_non_positive_or_out_of_range_values_are_rejected(values):
    with pytest.raises(CnnkitError):
        TrainConfig.from_dict(values)


def test_unknown_choice_suggests_the_close_one():
    with pytest.raises(CnnkitError, match="did you mean 'adamw'"):
        TrainConfig(optimizer="adamww")


def test_config_file_that_is_not_a_mapping_is_rejected(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(CnnkitError, match="mapping"):
        build_config(path)


def test_missing_config_file(tmp_path):
    with pytest.raises(CnnkitError, match="not found"):
        build_config(tmp_path / "nope.yaml")


def test_no_flip_turns_a_presets_alternating_flip_off_too():
    from cnnkit.config import TrainConfig

    on = TrainConfig(preset="cifar10-94").augmentation()
    assert on.flip and on.alternating_flip
    off = TrainConfig(preset="cifar10-94", flip=False).augmentation()
    assert not off.flip and not off.alternating_flip


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"lr": float("nan")}, "lr must be a finite number"),
        ({"warmup_epochs": float("inf")}, "warmup_epochs must be a finite number"),
        ({"clip_grad": float("nan")}, "clip_grad must be a finite number"),
        ({"weight_decay": float("nan")}, "weight_decay must be a finite number"),
        ({"seed": -1}, "seed must not be negative"),
        ({"seed": 10**30}, "seed must be at most"),
        ({"image_size": 100_000}, "image_size must be at most 8,192"),
        ({"crop_padding": 10**30}, "crop_padding must be at most"),
        ({"tensorboard": "no"}, "tensorboard must be true or false"),
        ({"model": 5}, "model must be text"),
        ({"project": [1, 2]}, "project must be text"),
    ],
)
def test_values_of_the_wrong_kind_are_one_line_before_any_run_folder(values, message):
    """NaN passes `lr > 0`'s check the wrong way round, a non-empty string counts as true, and
    a huge number overflows inside torch: each is refused by name."""
    with pytest.raises(CnnkitError, match=message):
        TrainConfig.from_dict(values)


def test_a_path_from_python_is_taken_as_its_name(tmp_path):
    from pathlib import Path

    cfg = TrainConfig(data=Path(tmp_path), project=Path(tmp_path / "runs"))
    assert cfg.data == str(tmp_path) and cfg.project == str(tmp_path / "runs")
