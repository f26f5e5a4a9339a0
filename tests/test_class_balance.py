"""Class imbalance remedies for classifiers: --class-weights and --sampler balanced."""

from __future__ import annotations

import pytest
import torch

import cnnkit
from cnnkit.data.imageset import ImageSet
from cnnkit.data.loader import iterate_batches
from cnnkit.errors import CnnkitError
from cnnkit.tasks.class_balance import balanced_sample_weights, class_weights


def long_tail(counts: list[int]) -> ImageSet:
    labels = torch.cat([torch.full((n,), i) for i, n in enumerate(counts)])
    images = torch.zeros(len(labels), 3, 4, 4, dtype=torch.uint8)
    return ImageSet(images, labels, [f"c{i}" for i in range(len(counts))], [])


def test_a_balanced_sampler_draws_every_class_about_equally():
    data = long_tail([900, 90, 10])
    weights = balanced_sample_weights(data.labels, 3)
    generator = torch.Generator().manual_seed(0)
    drawn = torch.cat(
        [
            b[1]
            for b in iterate_batches(data, 100, shuffle=True, generator=generator, weights=weights)
        ]
    )
    assert len(drawn) == 1000
    shares = torch.bincount(drawn, minlength=3).double() / len(drawn)
    assert torch.allclose(shares, torch.full((3,), 1 / 3, dtype=torch.float64), atol=0.06)
    again = torch.cat(  # the same generator state gives the same epoch (exact resume)
        [
            b[1]
            for b in iterate_batches(
                data, 100, shuffle=True, generator=torch.Generator().manual_seed(0), weights=weights
            )
        ]
    )
    assert torch.equal(drawn, again)


def test_auto_class_weights_are_median_frequency_balancing():
    weights = class_weights("auto", torch.tensor([900, 90, 10]))
    assert weights.tolist() == pytest.approx([0.1, 1.0, 9.0])
    assert class_weights("none", torch.tensor([5, 5])) is None
    with pytest.raises(CnnkitError, match="one per class"):
        class_weights("1,2", torch.tensor([1, 2, 3]))


def test_a_classifier_trains_with_both_remedies_and_records_them(tmp_path):
    run = cnnkit.train(
        data="cifar10-sample", model="simple_cnn", epochs=1, class_weights="auto",
        sampler="balanced", project=str(tmp_path), name="b", progress=False,
    )  # fmt: skip
    assert run.metrics["test_accuracy"] > 0
    clf = cnnkit.load(run.run_dir)
    assert clf.config["sampler"] == "balanced" and clf.config["class_weights"] == "auto"
    with pytest.raises(CnnkitError, match="--sampler is none or balanced"):
        cnnkit.train(
            data="cifar10-sample", model="simple_cnn", epochs=1, sampler="uniform",
            project=str(tmp_path), progress=False,
        )  # fmt: skip
    with pytest.raises(CnnkitError, match="--sampler is none or balanced"):
        cnnkit.TrainConfig(sampler="uniform")  # refused in the config, before any data loads


def test_datasets_inspect_warns_about_an_imbalanced_folder(tmp_path, capsys):
    import json

    from PIL import Image

    from cnnkit.cli import main

    for name, n in (("common", 24), ("rare", 2)):
        folder = tmp_path / "data" / "train" / name
        folder.mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (8, 8), (i, 0, 0)).save(folder / f"{i}.png")
    root = str(tmp_path / "data")
    assert main(["datasets", "--inspect", root, "--task", "classify"]) == 0
    printed = capsys.readouterr().out
    assert "warning: imbalanced training classes (12:1: common 24, rare 2)" in printed
    assert main(["datasets", "--inspect", root, "--task", "classify", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["images"]["train"] == {"common": 24, "rare": 2} and found["imbalance"] == 12
    assert main(["datasets", "--inspect", str(tmp_path / "nope"), "--task", "classify"]) != 0
    assert "give a folder of class folders" in capsys.readouterr().err
    # without --task: class folders are read as a classification dataset
    assert main(["datasets", "--inspect", root]) == 0
    assert "warning: imbalanced training classes" in capsys.readouterr().out
    # ... and so is what is wrong with them, not a list of detection layouts
    (tmp_path / "data" / "train" / "empty").mkdir()
    assert main(["datasets", "--inspect", root]) == 2
    err = capsys.readouterr().err
    assert "empty" in err and "no images" in err and "detection" not in err


def test_datasets_inspect_reads_a_named_dataset(capsys):
    import json

    from cnnkit.cli import main

    assert main(["datasets", "--inspect", "cifar10-sample", "--task", "classify", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert len(found["classes"]) == 10 and found["imbalance"] == 1.0
    assert set(found["images"]["train"].values()) == {200}
    assert set(found["images"]["test"].values()) == {50}
    assert main(["datasets", "--inspect", "cifar10-sample"]) == 0  # no --task: classify
    assert "cifar10-sample: classification, 10 classes" in capsys.readouterr().out
