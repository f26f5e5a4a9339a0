"""GANs of layer specs ("G: ... | D: ..." or a YAML file): the layers GANs need, the shape
checks where the spec enters, training through the CLI, the checkpoint that rebuilds both
networks from its recorded layers, and reproducible generation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import cnnkit
from cnnkit.cli import main
from cnnkit.config import TrainConfig
from cnnkit.engine.fit import Trainer
from cnnkit.models.layers import build_sequence
from cnnkit.tasks.base import task_of_model
from cnnkit.tasks.generate.networks import GAN, make_gan_spec
from stop_after import StopAfter

GENERATOR = (
    "dense:512,reshape:32:4:4,batchnorm,relu,"
    "convtranspose2d:16:4:stride=2:padding=1,batchnorm,relu,"
    "convtranspose2d:3:4:stride=2:padding=same,tanh"
)
DISCRIMINATOR = "conv2d:16:4:stride=2:padding=1,leaky_relu:0.2,conv2d:32:4:stride=2:padding=1,"
DISCRIMINATOR += "leaky_relu:0.2,flatten,dense:1"
SPEC = f"G: {GENERATOR} | D: {DISCRIMINATOR}"
TINY = ["--image-size", "16", "--batch-size", "16", "--fd-images", "8", "--precision", "fp32"]


@pytest.fixture(scope="module")
def tiny_images(tmp_path_factory) -> str:
    """40 training and 8 test images of 16 x 16 px in two class folders: coloured squares."""
    root = tmp_path_factory.mktemp("squares")
    rng = np.random.default_rng(0)
    for split, count in (("train", 20), ("test", 4)):
        for name in ("red", "blue"):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                image = rng.integers(0, 60, (16, 16, 3), dtype=np.uint8)
                x, y = rng.integers(0, 8, 2)
                image[y : y + 8, x : x + 8, 0 if name == "red" else 2] = 230
                Image.fromarray(image).save(root / split / name / f"{i:02d}.png")
    return str(root)


@pytest.fixture(scope="module")
def layer_run(tmp_path_factory, tiny_images):
    """One epoch of the layer-spec GAN through the CLI (EMA and spectral norm on)."""
    project = tmp_path_factory.mktemp("layer-gans")
    argv = ["train", "--model", SPEC, "--data", tiny_images, "--epochs", "1", "--ema", "0.9"]
    argv += ["--spectral-norm", "--project", str(project), "--name", "lay", "--no-progress"]
    assert main([*argv, *TINY, "--no-report"]) == 0
    return project / "lay"


def test_the_layers_a_gan_needs_keep_track_of_shapes():
    net, shape = build_sequence("dense:64,reshape:4:4:4,convtranspose2d:8:4:padding=1", (10,))
    assert shape == (8, 8, 8) and net(torch.zeros(2, 10)).shape == (2, 8, 8, 8)
    for kernel, stride in ((4, 2), (3, 2), (5, 2), (3, 1), (1, 2)):
        spec = f"convtranspose2d:2:{kernel}:stride={stride}:padding=same"
        net, shape = build_sequence(spec, (3, 5, 5))
        assert shape == (2, 5 * stride, 5 * stride)
        assert net(torch.zeros(1, 3, 5, 5)).shape[1:] == shape, (kernel, stride)
    with pytest.raises(cnnkit.CnnkitError, match=r"reshape to \(4, 4, 5\) needs 80 values"):
        build_sequence("dense:64,reshape:4:4:5", (10,))


def test_a_discriminator_may_end_in_a_one_channel_map_as_dcgan_does():
    spec = make_gan_spec(
        f"G: {GENERATOR} | D: conv2d:8:4:stride=2:padding=1,leaky_relu:0.2,"
        "conv2d:16:4:stride=2:padding=1,leaky_relu:0.2,conv2d:1:4",  # (1, 1, 1) at 16 px
        16,
        latent_dim=12,
    )
    gan = GAN(spec)
    images = gan(torch.randn(3, 12))
    assert images.shape == (3, 3, 16, 16) and images.abs().max() <= 1.0  # tanh
    assert gan.discriminator(images).shape == (3,)


def test_a_gan_spec_names_the_generate_task_and_other_specs_stay_classifiers():
    assert task_of_model(SPEC) == "generate"
    assert task_of_model("conv2d:8,relu,flatten,dense") == "classify"


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        (
            f"G: {GENERATOR.replace(',tanh', ',maxpool2d,tanh')} | D: {DISCRIMINATOR}",
            "the generator maps noise (100,) to (3, 8, 8), not to images (3, 16, 16)",
        ),
        (
            f"G: {GENERATOR} | D: {DISCRIMINATOR.replace('dense:1', 'dense:2')}",
            "the discriminator maps images (3, 16, 16) to (2,), not to one logit",
        ),
        (f"G: {GENERATOR}", "a layer-spec GAN needs a discriminator"),
        (f"G: {GENERATOR} | X: {DISCRIMINATOR}", "starts with neither G: nor D:"),
        (f"G: {GENERATOR} | D: conv2d:8:32,flatten,dense:1", "discriminator: conv2d kernel 32"),
    ],
)
def test_a_spec_whose_shapes_do_not_fit_is_refused_in_one_line(spec, words, tmp_path, capsys):
    argv = ["train", "--model", spec, "--data", str(tmp_path / "none"), *TINY]
    assert main([*argv, "--project", str(tmp_path)]) == 2  # refused before any data is read
    err = capsys.readouterr().err.strip()
    assert words in err and "\n" not in err and "Traceback" not in err


def test_a_conditional_layer_spec_gan_is_refused_with_the_way_out(tmp_path, capsys):
    path = tmp_path / "gan.yaml"
    path.write_text(yaml.safe_dump({"generator": [], "discriminator": [], "conditional": True}))
    assert main(["train", "--model", str(path), "--data", str(tmp_path), *TINY]) == 2
    assert "dcgan_conditional" in capsys.readouterr().err


def test_a_layer_spec_gan_trains_loads_and_generates_reproducibly(layer_run, tmp_path):
    saved = torch.load(layer_run / "best.pt", weights_only=True)
    model = saved["model"]
    assert model["name"] == "gan_layers" and model["spectral_norm"]
    assert [layer["type"] for layer in model["generator"]][:2] == ["dense", "reshape"]
    assert model["discriminator"][-1] == {"type": "dense", "units": 1, "bias": True}
    assert any("parametrizations" in key for key in saved["state_dict"])  # spectral norm in D
    gen = cnnkit.load(layer_run)
    a, b = gen.generate(6, seed=7), gen.generate(6, seed=7)
    assert a.dtype == np.uint8 and a.shape == (6, 16, 16, 3)
    assert np.array_equal(a, b) and not np.array_equal(a, gen.generate(6, seed=8))
    out = tmp_path / "grid.png"
    assert main(["generate", str(layer_run), "--n", "8", "--seed", "1", "--out", str(out)]) == 0
    assert Image.open(out).size == (8 * 18 + 2, 18 + 2)  # 8 tiles of 16 px, 2 px gaps
    assert (layer_run / "samples" / "epoch_001.png").is_file()


def test_a_yaml_gan_file_trains_like_the_string(tiny_images, tmp_path):
    path = tmp_path / "gan.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "generator": GENERATOR.split(","),
                "discriminator": DISCRIMINATOR.replace("dense:1", "dense").split(","),
            }
        )
    )
    run = cnnkit.train(
        model=str(path),
        data=tiny_images,
        epochs=1,
        image_size=16,
        batch_size=16,
        fd_images=8,
        latent_dim=16,
        precision="fp32",
        report=False,
        progress=False,
        project=str(tmp_path),
    )
    gen = cnnkit.load(run.run_dir)
    assert gen.spec.latent_dim == 16 and gen.spec.generator[0] == {
        "type": "dense",
        "units": 512,
        "bias": True,
    }
    assert np.isfinite(run.history[-1]["val_fd_lite0"])
    assert gen.spec.discriminator[-1]["units"] is None  # as written: the last dense gets 1
    assert gen.generate(2, seed=0).shape == (2, 16, 16, 3)


def test_an_interrupted_layer_spec_gan_resumes_bit_exact(tiny_images, tmp_path):
    options = {
        "model": SPEC,
        "data": tiny_images,
        "epochs": 2,
        "image_size": 16,
        "batch_size": 8,
        "fd_images": 8,
        "ema": 0.9,
        "spectral_norm": True,
        "gan_loss": "hinge",
        "precision": "fp32",
        "report": False,
        "project": str(tmp_path),
    }
    full = cnnkit.train(name="full", progress=False, **options)
    (tmp_path / "cut").mkdir()
    trainer = Trainer(TrainConfig(name="cut", **options), tmp_path / "cut", progress=False)
    trainer.stop = StopAfter(trainer.steps + 2)  # mid-way through epoch 2
    assert trainer.fit().interrupted
    resumed = cnnkit.train(resume=tmp_path / "cut", progress=False)
    a = torch.load(full.last, weights_only=True)["state_dict"]
    b = torch.load(resumed.last, weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert full.history[-1]["val_fd_lite0"] == resumed.history[-1]["val_fd_lite0"]


def test_summary_shows_the_generator_and_the_discriminator(capsys):
    assert main(["summary", SPEC, "--image-size", "16"]) == 0
    out = capsys.readouterr().out
    assert 'Model: "generator"' in out and 'Model: "discriminator"' in out
    assert "(3, 16, 16)" in out and "Input size: (100)" in out
    assert main(["models", "--task", "generate"]) == 0
    assert "G: LAYERS | D: LAYERS" in capsys.readouterr().out
