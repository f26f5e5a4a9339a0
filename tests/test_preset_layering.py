"""A preset over a complete config (an old TrainConfig, a resumed run's): the preset's values
replace the config's, the keys given with it beat the preset, the same at every entry point."""

from __future__ import annotations

import pytest
import torch
import yaml

import cnnkit
from cnnkit.cli import main
from cnnkit.config import TrainConfig, resume_values, with_overrides
from cnnkit.errors import CnnkitError
from cnnkit.presets import preset_config

TINY = "conv2d:8,relu,global_avg_pool,dense"
SAMPLE = "cifar10-sample"
CPU = preset_config("cifar10-cpu")


def saved_config(run_dir) -> dict:
    return yaml.safe_load((run_dir / "config.yaml").read_text())


def test_a_preset_over_a_complete_config_replaces_every_key_it_sets():
    old = TrainConfig(augment="standard", rotation=10.0, seed=7, lr=0.01).to_dict()
    cfg = TrainConfig.from_dict(with_overrides(old, {"preset": "cifar10-cpu"}))
    assert {key: getattr(cfg, key) for key in CPU} == CPU
    assert cfg.seed == 7  # a key the preset does not set keeps the old config's value
    # the preset's `augment` replaces the old augmentation whole: no rotation left over
    assert cfg.rotation is None
    assert cfg.augmentation() == TrainConfig(preset="cifar10-cpu").augmentation()
    # keys given alongside the preset beat it
    flags = {"preset": "cifar10-cpu", "epochs": 2, "data": SAMPLE, "flip": False}
    cfg = TrainConfig.from_dict(with_overrides(old, flags))
    assert (cfg.epochs, cfg.data, cfg.flip, cfg.batch_size) == (2, SAMPLE, False, 512)
    assert cfg.crop_padding == CPU["crop_padding"]


def test_train_with_an_old_config_and_a_preset_trains_the_presets_settings(tmp_path):
    old = TrainConfig(data=SAMPLE, model=TINY, epochs=1, lr=0.01, project=str(tmp_path))
    given = dict(model=TINY, data=SAMPLE, epochs=1)  # else the preset's: fastnet_cpu, cifar10
    run = cnnkit.train(old, preset="cifar10-cpu", **given, name="p", progress=False)
    saved = saved_config(run.run_dir)
    assert (saved["model"], saved["epochs"], saved["data"]) == (TINY, 1, SAMPLE)
    for key in ("optimizer", "lr", "momentum", "batch_size", "label_smoothing", "tta"):
        assert saved[key] == CPU[key], key
    assert saved["preset"] == "cifar10-cpu"
    assert run.metrics["tta"] == "flip-translate" and run.metrics["validation"] == "test"


def test_resume_values_apply_a_presets_training_settings_and_refuse_a_new_model_or_data():
    saved = TrainConfig(data=SAMPLE, model="fastnet_cpu", lr=0.01, epochs=1).to_dict()
    values = resume_values(saved, {"preset": "cifar10-cpu", "data": SAMPLE, "epochs": 2})
    assert (values["lr"], values["epochs"], values["data"]) == (CPU["lr"], 2, SAMPLE)
    tiny = {**saved, "model": TINY}
    with pytest.raises(CnnkitError, match=r"preset cifar10-cpu changes the resumed run's model"):
        resume_values(tiny, {"preset": "cifar10-cpu", "data": SAMPLE})
    with pytest.raises(CnnkitError, match=r"resumed run's model .* train a new run"):
        resume_values(tiny, {"model": "simple_cnn"})
    with pytest.raises(
        CnnkitError, match=f"preset cifar10-cpu changes the resumed run's data.*--data {SAMPLE}"
    ):
        resume_values(saved, {"preset": "cifar10-cpu"})
    # an explicit data flag may point the run at its data's new place
    assert resume_values(saved, {"data": "elsewhere"})["data"] == "elsewhere"
    assert resume_values(saved, {}) == saved
    # best.pt was chosen by validation at the saved test size: a new one needs a new run
    seg = {**saved, "model": "lraspp", "image_size": 64, "test_image_size": None}
    with pytest.raises(CnnkitError, match=r"test image size \(None -> 96\).*train a new run"):
        resume_values(seg, {"test_image_size": 96})
    assert resume_values(seg, {"epochs": 3})["test_image_size"] is None


@pytest.fixture
def tiny_run(tmp_path):
    """One epoch of the tiny model with Nesterov SGD (cifar10-cpu's optimiser) at batch 64."""
    args = ["train", "--data", SAMPLE, "--model", TINY, "--epochs", "1", "--optimizer", "sgd"]
    args += ["--project", str(tmp_path), "--name", "tiny", "--no-progress", "--precision", "fp32"]
    assert main(args) == 0
    return tmp_path / "tiny"


def test_resume_with_a_preset_applies_its_training_settings(tiny_run):
    before = saved_config(tiny_run)
    assert (before["label_smoothing"], before["tta"], before["batch_size"]) == (0.0, "none", 64)
    flags = ["--model", TINY, "--data", SAMPLE, "--epochs", "2", "--precision", "fp32"]
    assert main(["train", "--resume", str(tiny_run), "--preset", "cifar10-cpu", *flags]) == 0
    after = saved_config(tiny_run)
    assert (after["model"], after["epochs"], after["precision"]) == (TINY, 2, "fp32")
    for key in ("label_smoothing", "tta", "batch_size", "momentum", "nesterov", "val_split"):
        assert after[key] == CPU[key], key
    last = torch.load(tiny_run / "last.pt", weights_only=True)
    assert last["epoch"] == 2 and last["config"]["tta"] == "flip-translate"


def test_resume_with_a_preset_that_changes_the_model_or_data_is_one_line(
    tiny_run, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("CNNKIT_OFFLINE", "1")  # the preset's cifar10 is never downloaded
    monkeypatch.setenv("CNNKIT_DATA", str(tmp_path / "no-data"))
    resume = ["train", "--resume", str(tiny_run), "--no-progress", "--preset", "cifar10-cpu"]
    assert main(resume) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "changes the resumed run's model" in err
    assert main([*resume, "--model", TINY]) == 2
    assert "changes the resumed run's data" in capsys.readouterr().err
    assert torch.load(tiny_run / "last.pt", weights_only=True)["epoch"] == 1  # untouched
