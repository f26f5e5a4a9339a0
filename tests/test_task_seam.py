"""The task seam: format-1 checkpoints still load and resume, the task comes from the model,
the losses every report gives agree, and best.pt is never chosen by a training figure."""

from __future__ import annotations

import json

import pytest
import torch

import cnnkit
from cnnkit.config import TrainConfig
from cnnkit.engine.checkpoint import atomic_torch_save, load_checkpoint
from cnnkit.errors import CnnkitError
from cnnkit.tasks.base import task_name
from cnnkit.tasks.classify.predictor import Classifier
from image_files import make_split

TINY = "conv2d:8,relu,maxpool2d,conv2d:16,relu,global_avg_pool,dense"
SAMPLE = "cifar10-sample"


def tiny_run(tmp_path, name: str, **options):
    values = dict(data=SAMPLE, model=TINY, epochs=2, batch_size=128, seed=0)
    values.update(options)
    return cnnkit.train(project=str(tmp_path), name=name, progress=False, **values)


def as_format_1(ckpt: dict) -> dict:
    """A checkpoint as cnnkit wrote it before the task seam: version 1, no `task`, the epoch's
    running totals as loss_sum/correct, best as [accuracy, epoch] (-1 before any)."""
    old = {k: v for k, v in ckpt.items() if k not in ("task",)}
    old["version"] = 1
    old["metrics"] = {"best_val_accuracy": ckpt["metrics"]["best_val_accuracy"], "best_epoch": 1}
    if "progress" in ckpt:
        progress = dict(ckpt["progress"])
        sums = progress.pop("sums")
        progress["loss_sum"] = sums.get("loss", 0.0)
        progress["correct"] = int(sums.get("accuracy", 0))
        old["progress"] = progress
        best, epoch = ckpt["best"]
        old["best"] = [-1.0 if best is None else best, epoch]
    return old


def test_a_format_1_checkpoint_loads_and_predicts_the_same(tmp_path):
    run = tiny_run(tmp_path, "new")
    new = load_checkpoint(run.best)
    assert new["version"] == 2 and new["task"] == "classify"
    old_path = tmp_path / "old.pt"
    atomic_torch_save(as_format_1(new), old_path)
    raw = torch.load(old_path, weights_only=True)
    assert raw["version"] == 1 and "task" not in raw

    old = cnnkit.load(old_path)
    assert isinstance(old, Classifier)
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    expected = cnnkit.load(run.best).predict_images(images)
    assert torch.equal(old.predict_images(images), expected)


def test_a_format_1_last_pt_resumes(tmp_path):
    run = tiny_run(tmp_path, "r", epochs=1)
    last = load_checkpoint(run.last)
    atomic_torch_save(as_format_1(last), run.last)
    resumed = cnnkit.train(resume=run.run_dir, epochs=2, progress=False)
    assert resumed.metrics["epochs_done"] == 2
    assert [row["epoch"] for row in resumed.history] == [1, 2]
    assert load_checkpoint(resumed.last)["version"] == 2


def test_the_task_comes_from_the_model_or_the_flag():
    assert task_name(TrainConfig(model="simple_cnn")) == "classify"
    assert task_name(TrainConfig(model="fcos_mobilenet_v2")) == "detect"
    assert task_name(TrainConfig(model="simple_cnn", task="classify")) == "classify"
    with pytest.raises(CnnkitError, match="did you mean 'detect'"):
        TrainConfig(task="detekt")


def test_validation_test_and_evaluate_report_the_same_plain_cross_entropy(tmp_path):
    # label smoothing changes the training loss only: validation (here the test split itself),
    # metrics.json's test loss and `cnnkit evaluate` all give the plain cross-entropy
    run = tiny_run(tmp_path, "ls", label_smoothing=0.4, val_split=0.0, epochs=1)
    row = run.history[-1]
    report = cnnkit.evaluate(str(run.run_dir), SAMPLE, out_dir=None, progress=False)
    assert report.loss == pytest.approx(run.metrics["test_loss"], rel=1e-5)
    assert row["val_loss"] == pytest.approx(report.loss, rel=1e-5)


def test_without_validation_images_best_pt_is_the_last_epoch_not_a_training_figure(tmp_path):
    data = tmp_path / "data"
    make_split(data / "train", {"a": 12, "b": 12})  # no val/ or test/ folder
    run = tiny_run(tmp_path, "noval", data=str(data), val_split=0.0, epochs=3, batch_size=8)
    metrics = json.loads((run.run_dir / "metrics.json").read_text())
    assert metrics["validation"] == "none"
    assert metrics["best_val_accuracy"] is None and metrics["best_by"] == "last epoch"
    assert metrics["best_epoch"] == 3
    # solid-colour images: a channel with std 0 must not make the inputs NaN
    assert all(row["train_loss"] == row["train_loss"] for row in run.history)
    best, last = load_checkpoint(run.best), load_checkpoint(run.last)
    assert best["epoch"] == 3 and best["metrics"]["best_val_accuracy"] is None
    for key, value in last["state_dict"].items():
        assert torch.equal(best["state_dict"][key], value), key
