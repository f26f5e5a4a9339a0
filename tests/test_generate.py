"""GANs (cnnkit.tasks.generate): the networks' shapes, one step updating both networks through
the engine's named optimisations, exact resume, seeded generation, the Lite0 distances, the
conditional model's classes, and the one-line refusals."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cnnkit
from cnnkit.cli import main
from cnnkit.config import TrainConfig
from cnnkit.data import load_data
from cnnkit.engine.fit import Trainer
from cnnkit.engine.loop import EpochProgress, run_epoch
from cnnkit.tasks.base import Metrics, task_of_model
from cnnkit.tasks.generate.distance import (
    features,
    frechet_distance,
    kernel_distance,
    standard_fid_status,
)
from cnnkit.tasks.generate.networks import GAN, GANSpec
from stop_after import StopAfter

SAMPLE = Path(cnnkit.__file__).parent / "data" / "samples" / "cifar10-sample"
TINY = {
    "image_size": 16,
    "batch_size": 64,
    "lr": 2e-4,
    "fd_images": 8,
    "precision": "fp32",
    "report": False,
}


def tiny(**overrides):
    return {**TINY, **overrides}


@pytest.fixture(scope="module")
def small_cifar(tmp_path_factory) -> str:
    """A real-image folder: 3 classes of the bundled sample, 48 training and 12 test images
    each (enough for a few GAN steps per epoch, small enough for quick tests)."""
    root = tmp_path_factory.mktemp("small-cifar")
    for split, count in (("train", 48), ("test", 12)):
        for name in ("automobile", "cat", "ship"):
            (root / split / name).mkdir(parents=True)
            for path in sorted((SAMPLE / split / name).glob("*.png"))[:count]:
                shutil.copy(path, root / split / name / path.name)
    return str(root)


@pytest.fixture(scope="module")
def sample_test_images() -> torch.Tensor:
    """The bundled sample's 500 real test images (uint8, 32 x 32)."""
    return load_data("cifar10-sample", splits=("test",), progress=False).test.images


@pytest.fixture(scope="module")
def conditional_run(tmp_path_factory, small_cifar):
    """dcgan_conditional, one epoch on the sample at 16 px (hinge loss, spectral norm)."""
    project = tmp_path_factory.mktemp("gan-runs")
    return cnnkit.train(
        model="dcgan_conditional",
        epochs=1,
        gan_loss="hinge",
        spectral_norm=True,
        ema=0.9,
        project=str(project),
        name="cond",
        progress=False,
        **tiny(data=small_cifar),
    )


@pytest.mark.parametrize("size", [16, 32, 64])
def test_generator_and_discriminator_shapes(size):
    for spec in (
        GANSpec(image_size=size),
        GANSpec("dcgan_conditional", size, num_classes=10, spectral_norm=True),
    ):
        gan = GAN(spec)
        labels = torch.tensor([0, 3, 9]) if spec.conditional else None
        images = gan(torch.randn(3, spec.latent_dim), labels)
        assert images.shape == (3, 3, size, size)
        assert images.abs().max() <= 1.0  # tanh
        assert gan.discriminator(images, labels).shape == (3,)


def test_the_task_comes_from_a_gan_model_name():
    assert task_of_model("dcgan") == task_of_model("dcgan_conditional") == "generate"
    assert task_of_model("simple_cnn") == "classify"


def test_one_step_updates_both_networks_through_their_own_optimisers(tmp_path, small_cifar):
    cfg = TrainConfig(model="dcgan", **tiny(data=small_cifar))
    trainer = Trainer(cfg, tmp_path, progress=False)
    trainer.enter_stage(0)
    assert list(trainer.optimizations) == ["D", "G"]
    assert trainer.optimizations["D"].optimizer.param_groups[0]["betas"] == (0.5, 0.999)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    progress = EpochProgress()
    step, batches = trainer.task.epoch(trainer.model, 0, progress)
    run_epoch(
        step, batches, trainer.optimizations, trainer.generator, progress, trainer.device,
        should_stop=lambda: progress.step >= 1,
    )  # fmt: skip
    after = trainer.model.state_dict()
    for net in ("generator", "discriminator"):
        weights = [k for k in before if k.startswith(net) and k.endswith("weight")]
        assert weights and any(not torch.equal(before[k], after[k]) for k in weights), net
    assert set(progress.sums) == {"d_loss", "g_loss"} and progress.finite


def test_an_interrupted_gan_run_resumes_bit_exact(tmp_path, small_cifar):
    options = tiny(
        data=small_cifar, batch_size=16, model="dcgan", epochs=2, seed=3, ema=0.9, flip=True
    )
    options["project"] = str(tmp_path)
    full = cnnkit.train(name="full", progress=False, **options)
    (tmp_path / "cut").mkdir()
    trainer = Trainer(TrainConfig(name="cut", **options), tmp_path / "cut", progress=False)
    assert trainer.steps == 8  # 130 training images (144 less a 10% validation split) / 16
    trainer.stop = StopAfter(trainer.steps + 3)  # mid-way through epoch 2
    assert trainer.fit().interrupted
    saved = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    assert set(saved["optimizer"]) == {"D", "G"} and set(saved["scaler"]) == {"D", "G"}
    resumed = cnnkit.train(resume=tmp_path / "cut", progress=False)
    for name in ("last", "best"):
        a = torch.load(getattr(full, name), weights_only=True)
        b = torch.load(getattr(resumed, name), weights_only=True)
        for key, value in a["state_dict"].items():
            assert torch.equal(value, b["state_dict"][key]), (name, key)
    a, b = torch.load(full.last, weights_only=True), torch.load(resumed.last, weights_only=True)
    for opt in ("D", "G"):
        for i, state in a["optimizer"][opt]["state"].items():
            assert torch.equal(state["exp_avg"], b["optimizer"][opt]["state"][i]["exp_avg"])
    assert full.history[-1]["val_fd_lite0"] == resumed.history[-1]["val_fd_lite0"]
    # best.pt is the epoch of the lowest validation distance; a grid per epoch
    distances = [row["val_fd_lite0"] for row in full.history]
    assert full.metrics["best_epoch"] == 1 + int(np.argmin(distances))
    assert full.metrics["best_val_fd_lite0"] == min(distances)
    grids = sorted(p.name for p in (full.run_dir / "samples").iterdir())
    assert grids == ["epoch_001.png", "epoch_002.png"]
    for key in ("test_fd_lite0", "floor_fd_lite0", "test_kid_lite0", "floor_kid_lite0"):
        assert np.isfinite(full.metrics[key]), key


def test_metrics_pick_by_their_direction():
    assert Metrics({"fd": 1.0}, "fd", higher_is_better=False).better(1.0, 2.0)
    assert not Metrics({"fd": 1.0}, "fd", higher_is_better=False).better(3.0, 2.0)
    assert Metrics({"accuracy": 0.5}, "accuracy").better(0.6, 0.5)


def test_generation_is_reproducible_under_a_seed(conditional_run):
    gen = cnnkit.load(conditional_run.run_dir)
    a, b = gen.generate(6, seed=7), gen.generate(6, seed=7)
    assert a.dtype == np.uint8 and a.shape == (6, 16, 16, 3)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, gen.generate(6, seed=8))
    cats = gen.generate(4, class_name="cat", seed=7)
    assert not np.array_equal(cats, a[:4])  # the class changes the images


def test_a_conditional_gan_writes_a_class_folder_and_refuses_an_unknown_class(
    conditional_run, tmp_path, capsys
):
    run = str(conditional_run.run_dir)
    assert main(["generate", run, "--n", "20", "--seed", "1", "--out", str(tmp_path / "d")]) == 0
    folders = sorted(p.name for p in (tmp_path / "d").iterdir())
    assert folders == sorted(cnnkit.load(run).classes)
    assert len(list((tmp_path / "d" / "cat").glob("*.png"))) == 7  # 20 images, 3 classes
    out = tmp_path / "cats.png"
    assert main(["generate", run, "--n", "8", "--class", "cat", "--out", str(out)]) == 0
    assert Image.open(out).size == (8 * 18 + 2, 18 + 2)  # 8 tiles of 16 px, 2 px gaps
    capsys.readouterr()
    assert main(["generate", run, "--class", "kat", "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert "did you mean 'cat'" in err and "\n" not in err and "Traceback" not in err
    # a second run into the same folder adds its images: the numbers go on
    assert main(["generate", run, "--n", "3", "--class", "cat", "--out", str(tmp_path / "d")]) == 0
    assert len(list((tmp_path / "d" / "cat").glob("*.png"))) == 10
    assert (tmp_path / "d" / "cat" / "00009.png").is_file()
    (tmp_path / "file").write_text("not a folder")
    for bad, message in (
        (["--seed", str(2**64)], "seed must be a whole number from 0 to 2**63 - 1"),
        (["--out", str(tmp_path / "file" / "g.png")], "is a file, not a folder"),
        (["--out", str(tmp_path / "file")], "is a file, not a folder"),
    ):
        argv = ["generate", run, "--n", "2", "--out", str(tmp_path / "y.png"), *bad]
        assert main(argv) == 2, bad
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err, (bad, err)


def test_export_serve_and_predict_refuse_a_gan_in_one_line(conditional_run, capsys):
    run = str(conditional_run.run_dir)
    for argv in (["export", run], ["serve", run], ["predict", run, run]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert "GAN" in err[-1] and err[-1].startswith("cnnkit: error:"), argv
        assert not any("Traceback" in line for line in err)


def test_evaluate_reports_the_distance_and_its_floor(conditional_run, capsys):
    assert main(["evaluate", str(conditional_run.run_dir), "--json"]) == 0
    import json

    report = json.loads(capsys.readouterr().out)
    assert report["n"] == 8 and report["split"] == "test"
    assert report["fd_lite0"] > report["floor_fd_lite0"] >= 0
    assert main(["evaluate", str(conditional_run.run_dir)]) == 0  # 8 a side: said to be few
    assert "8 images a side are too few" in " ".join(capsys.readouterr().out.split())


def test_the_distance_of_a_set_to_itself_is_zero_and_grows_with_noise(sample_test_images):
    images = sample_test_images[:30]
    clean = features(images)
    assert frechet_distance(clean, clean) == pytest.approx(0.0, abs=1e-6)
    gen = torch.Generator().manual_seed(0)
    found = []
    for sigma in (10, 40, 80):
        noisy = (images.float() + sigma * torch.randn(images.shape, generator=gen)).clamp(0, 255)
        other = features(noisy.round().to(torch.uint8))
        found.append((frechet_distance(other, clean), kernel_distance(other, clean)))
    assert found[0][0] < found[1][0] < found[2][0]
    assert found[0][1] < found[1][1] < found[2][1]
    # the unbiased KID of a set to itself is slightly negative (its cross term keeps the
    # diagonal), and small beside any real difference
    assert abs(kernel_distance(clean, clean)) < found[0][1] / 2


@pytest.mark.parametrize("n", [10, 300])  # fewer samples than dimensions, and more
def test_the_frechet_distance_agrees_with_torchmetrics(n):
    from torchmetrics.image.fid import FrechetInceptionDistance

    class AsFeatures(torch.nn.Module):  # hands torchmetrics the feature vectors as they are
        num_features = 16

        def forward(self, x):
            return x

    rng = np.random.default_rng(0)
    a = rng.normal(size=(n, 16))
    b = rng.normal(0.3, 1.2, size=(n, 16)) @ rng.normal(size=(16, 16)) * 0.5
    metric = FrechetInceptionDistance(feature=AsFeatures())
    metric.update(torch.from_numpy(a), real=True)
    metric.update(torch.from_numpy(b), real=False)
    assert frechet_distance(b, a) == pytest.approx(float(metric.compute()), rel=1e-4)


def test_offline_the_standard_fid_says_which_file_to_put_where(empty_hub):
    line = standard_fid_status()
    assert line is not None and "\n" not in line
    assert "weights-inception-2015-12-05-6726825d.pth" in line and str(empty_hub) in line


def test_gan_options_are_refused_by_other_tasks_and_classifier_options_by_gans(tmp_path):
    with pytest.raises(cnnkit.CnnkitError, match="--gan-loss is for GANs"):
        cnnkit.train(model="simple_cnn", gan_loss="hinge", project=str(tmp_path))
    with pytest.raises(cnnkit.CnnkitError, match="--mixup is not available for GANs"):
        cnnkit.train(model="dcgan", mixup=0.2, project=str(tmp_path))
    with pytest.raises(cnnkit.CnnkitError, match="gan-loss"):
        TrainConfig(model="dcgan", gan_loss="wasserstein")


def test_the_report_page_shows_the_distances_losses_and_grids(conditional_run):
    from cnnkit.report import build_report

    html = build_report(conditional_run.run_dir).read_text()
    for words in ("real-vs-real floor fd_lite0", "Losses and distance per epoch", "epoch_001"):
        assert words in html, words
