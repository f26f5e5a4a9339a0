"""Training controls wired into the trainer: EMA, early stopping, gradient clipping, TTA."""

import dataclasses
import json

import pytest
import torch
from torch import nn

import cnnkit
from cnnkit.cli import main
from cnnkit.config import AUGMENT_OPS, TrainConfig, build_config, with_overrides
from cnnkit.data import ImageSet
from cnnkit.data.augment import AugmentConfig
from cnnkit.engine.loop import EpochProgress
from cnnkit.errors import CnnkitError
from cnnkit.tasks.classify.loop import train_one_epoch
from step_context import sgd_step_context

SAMPLE = "cifar10-sample"


def test_early_stopping_stops_keeps_best_and_refuses_resume(tmp_path):
    # a learning rate far too high: validation accuracy stalls at once
    run = cnnkit.train(
        data=SAMPLE,
        epochs=8,
        batch_size=64,
        optimizer="sgd",
        lr=5.0,
        momentum=0.0,
        patience=2,
        project=str(tmp_path),
        name="es",
        progress=False,
    )
    assert run.metrics["stopped_early"] is True
    assert run.metrics["epochs_done"] < 8
    assert run.metrics["epochs_done"] - run.metrics["best_epoch"] == 2
    with pytest.raises(CnnkitError, match="stopped early"):
        cnnkit.train(resume=run.run_dir, progress=False)


def test_ema_weights_are_evaluated_and_saved_as_best(tmp_path):
    """One epoch, so best.pt is the epoch last.pt ends: both hold the average of that moment."""
    run = cnnkit.train(
        data=SAMPLE,
        epochs=1,
        batch_size=64,
        ema=0.9,
        project=str(tmp_path),
        name="ema",
        progress=False,
    )
    best = torch.load(run.best, weights_only=True)
    last = torch.load(run.last, weights_only=True)
    assert run.metrics["best_epoch"] == 1
    assert last["ema"]["updates"] == 29  # one update per step, 29 steps an epoch
    averaged = last["ema"]["state_dict"]
    assert best["state_dict"].keys() == averaged.keys()
    for key, value in best["state_dict"].items():
        assert torch.equal(value, averaged[key]), key
    raw, avg = last["state_dict"]["dense_2.weight"], averaged["dense_2.weight"]
    assert not torch.equal(raw, avg)  # the average lags the raw weights
    # the validation accuracy recorded is the averaged weights' (best.pt's) on those images
    report = cnnkit.evaluate(run.run_dir, split="val", out_dir=None, progress=False)
    assert sum(report.support) == 200
    assert report.top1 == pytest.approx(run.history[0]["val_accuracy"], abs=1e-6)


def test_gradient_clipping_bounds_the_sgd_update():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
    images = ImageSet(
        torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8),
        torch.randint(0, 4, (16,)),
        ["a", "b", "c", "d"],
    )
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    ctx = sgd_step_context(model, lr=1.0, clip_grad=1e-3)
    train_one_epoch(model, images, ctx, 16, torch.Generator().manual_seed(0), EpochProgress())
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert 0 < (after - before).norm() <= 1e-3 + 1e-7


def test_evaluate_with_tta_reports_the_gain(tmp_path, capsys):
    run = cnnkit.train(
        data=SAMPLE,
        epochs=1,
        batch_size=64,
        tta="flip-translate",
        project=str(tmp_path),
        name="t",
        progress=False,
    )
    capsys.readouterr()  # drop the training output
    assert (
        main(["evaluate", str(run.run_dir), "--tta", "flip-translate", "--json", "--no-progress"])
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["tta"] == "flip-translate"
    plain = report["top1_accuracy_without_tta"]
    assert plain == pytest.approx(run.metrics["test_accuracy"], abs=1e-6)
    # the same best.pt with the same TTA on the same 500 test images as the run's own figure
    assert report["images"] == 500
    assert report["top1_accuracy"] == pytest.approx(run.metrics["test_accuracy_tta"], abs=1e-6)


def test_unknown_tta_mode_is_a_one_line_error(capsys):
    assert main(["evaluate", "nowhere", "--tta", "flipp"]) == 2
    assert "did you mean 'flip'" in capsys.readouterr().err


def test_augmented_run_resumes_bit_identical(tmp_path):
    """Augmentation randomness is seeded per (seed, epoch, step): resuming replays it exactly."""
    common = dict(
        data=SAMPLE,
        epochs=2,
        batch_size=64,
        augment="standard",
        mixup=0.2,
        precision="fp32",
        project=str(tmp_path),
        progress=False,
    )
    full = cnnkit.train(name="full", **common)
    assert [r["epoch"] for r in full.history] == [1, 2]
    first = cnnkit.train(name="cut", **{**common, "epochs": 1})
    resumed = cnnkit.train(resume=first.run_dir, epochs=2, progress=False)
    a = torch.load(full.last, weights_only=True)["state_dict"]
    b = torch.load(resumed.last, weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_show_batch_writes_a_grid(tmp_path, capsys):
    out = tmp_path / "batch.png"
    assert (
        main(
            [
                "show-batch",
                "--data",
                SAMPLE,
                "--augment",
                "basic",
                "--rotation",
                "20",
                "--n",
                "16",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    from PIL import Image

    with Image.open(out) as grid:
        assert grid.width >= 4 * 32 and grid.height >= 2 * 32
    assert "16 training images, augmented (flip, crop 4, rotation 20)" in capsys.readouterr().out


def test_an_augment_given_replaces_the_presets_augmentation_whole(tmp_path, capsys):
    assert TrainConfig(preset="cifar10-94").augmentation().describe() == "alternating flip, crop 2"
    assert TrainConfig(preset="cifar10-94", augment="none").augmentation().is_identity()
    only_flip = TrainConfig(preset="cifar10-94", augment="none", flip=True).augmentation()
    assert only_flip.describe() == "flip"
    (tmp_path / "run.yaml").write_text("augment: basic\n")
    from_file = build_config(tmp_path / "run.yaml", {"preset": "cifar10-94"})
    assert from_file.augmentation().describe() == "flip, crop 4" and from_file.lr == 1.5
    # the Python API and --resume start from a config with every field set: the same holds
    resolved = TrainConfig(preset="cifar10-94").to_dict()
    assert TrainConfig.from_dict(with_overrides(resolved, {"augment": "none"})).augmentation() == (
        AugmentConfig()
    )
    kept = TrainConfig.from_dict(with_overrides(resolved, {"lr": 0.5, "flip": None}))
    assert kept.augmentation().describe() == "alternating flip, crop 2" and kept.lr == 0.5
    ops = {f.name for f in dataclasses.fields(AugmentConfig)} - {"scale"}
    assert set(AUGMENT_OPS) == ops  # every per-operation field is a flag that overrides
    args = ["show-batch", "--data", SAMPLE, "--preset", "cifar10-94", "--augment", "none"]
    assert main([*args, "--n", "8", "--out", str(tmp_path / "b.png")]) == 0
    assert "8 training images, augmented (none)" in capsys.readouterr().out


def test_unknown_augment_preset_suggests_the_close_one(capsys):
    assert main(["train", "--augment", "standart"]) == 2
    assert "did you mean 'standard'" in capsys.readouterr().err


def test_alternating_flip_mirrors_each_image_in_every_other_epoch(tmp_path):
    from collections import defaultdict

    from cnnkit.config import TrainConfig
    from cnnkit.engine.fit import Trainer

    cfg = TrainConfig(
        data=SAMPLE, epochs=3, batch_size=256, alternating_flip=True, project=str(tmp_path)
    )
    (tmp_path / "alt").mkdir()
    trainer = Trainer(cfg, tmp_path / "alt", progress=False)
    train = trainer.data.train
    position = {img.numpy().tobytes(): i for i, img in enumerate(train.images)}
    assert len(position) == len(train)  # every image is distinct, so a batch names its images
    mirrored: dict[int, set[int]] = defaultdict(set)  # epoch -> positions mirrored
    augment = trainer.task.augment

    def recording(images, labels, generator, flip=None):
        out, targets = augment(images, labels, generator, flip)
        for image, seen in zip(images, out, strict=True):
            if not torch.equal(image, seen):
                assert torch.equal(seen, image.flip(-1))
                mirrored[trainer.epoch].add(position[image.numpy().tobytes()])
        return out, targets

    trainer.task.augment = recording
    trainer.fit()
    everything = set(range(len(train)))
    assert 0.4 * len(train) < len(mirrored[0]) < 0.6 * len(train)
    assert mirrored[0] | mirrored[1] == everything and not mirrored[0] & mirrored[1]
    assert mirrored[2] == mirrored[0]
