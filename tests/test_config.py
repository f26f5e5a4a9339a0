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
