"""fastnet (the frozen whitening layer), presets and their config layering, a tiny preset run."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import cnnkit
from cnnkit.config import TrainConfig, build_config
from cnnkit.engine.fit import Trainer
from cnnkit.engine.stages import Stage, apply_stage
from cnnkit.errors import CnnkitError
from cnnkit.models import ModelSpec, create_model
from cnnkit.models.fastnet import FastNet
from cnnkit.presets import format_presets, list_presets, preset_config
from stop_after import StopAfter


def _correlated_images(n: int = 400, seed: int = 0) -> torch.Tensor:
    """Zero-mean images with correlated channels and neighbouring pixels."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 17, 17, generator=g)
    x = (x[..., 1:, :] + 0.5 * x[..., :-1, :])[..., 1:] + 0.5 * x[..., :-1, :-1]  # spatial
    mix = torch.tensor([[1.0, 0.6, 0.3], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]])
    return torch.einsum("ij,njhw->nihw", mix, x)


def test_fastnet_builds_and_its_whitening_layer_is_frozen():
    model = create_model("fastnet", 10, (3, 32, 32))
    assert isinstance(model, FastNet)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert not model.whiten.weight.requires_grad
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert id(model.whiten.weight) not in trainable
    # the trainer's optimiser sees only trainable parameters: the whitening layer stays fixed
    groups = apply_stage(model, Stage("train", 1, None, 0.1))
    assert id(model.whiten.weight) not in {id(p) for g in groups for p in g["params"]}
    small = create_model(ModelSpec("fastnet", options={"widths": "8,16", "depth": 1}), 5)
    assert small(torch.zeros(3, 3, 32, 32)).shape == (3, 5)
    assert create_model("fastnet_cpu", 10).blocks[-1].layers[0].out_channels == 96
    wide = create_model("fastnet_wide", 10)
    assert [b.layers[0].out_channels for b in wide.blocks] == [128, 384, 384]
    assert wide.whiten_bias_epochs == 3 and create_model("fastnet_cpu", 10).whiten_bias_epochs == 0
    with pytest.raises(CnnkitError, match="widths"):
        create_model(ModelSpec("fastnet", options={"widths": "a,b"}), 10)


def test_init_from_data_whitens_the_patches_it_saw():
    images = _correlated_images()
    model = FastNet(10, widths=(8, 8, 8))
    model.init_from_data(images)
    weight = model.whiten.weight
    half = weight.shape[0] // 2
    assert torch.equal(weight[half:], -weight[:half])
    out = F.conv2d(images.double(), weight[:half].double())  # (N, 12, h, w)
    flat = out.permute(0, 2, 3, 1).reshape(-1, half)
    covariance = flat.T @ flat / len(flat)
    assert torch.allclose(covariance, torch.eye(half, dtype=torch.float64), atol=2e-2)


def test_fastnet_state_dict_round_trips_the_whitening_weights():
    model = create_model("fastnet", 10, (3, 32, 32))
    model.init_from_data(_correlated_images(50))
    model.eval()
    rebuilt = create_model(ModelSpec("fastnet"), 10, (3, 32, 32))
    rebuilt.load_state_dict(model.state_dict())
    rebuilt.eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(rebuilt.whiten.weight, model.whiten.weight)
    assert torch.allclose(rebuilt(x), model(x))


def _sgd_step(model: FastNet, optimizer: torch.optim.Optimizer, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    images, labels = torch.randn(8, 3, 32, 32, generator=g), torch.randint(0, 10, (8,), generator=g)
    optimizer.zero_grad(set_to_none=True)
    F.cross_entropy(model(images), labels).backward()
    optimizer.step()


def test_the_whitening_bias_trains_for_its_epochs_then_stays_put():
    torch.manual_seed(0)
    model = create_model(ModelSpec("fastnet", options={"whiten_bias_epochs": 2}), 10)
    model.init_from_data(_correlated_images(50, seed=1).repeat(1, 1, 2, 2))
    groups = apply_stage(model, Stage("train", 1, None, 0.1))  # as the trainer builds them
    assert id(model.whiten.bias) in {id(p) for g in groups for p in g["params"]}
    optimizer = torch.optim.SGD(groups, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)
    for epoch in (0, 1):
        model.start_epoch(epoch)
        before = model.whiten.bias.clone()
        _sgd_step(model, optimizer, seed=epoch)
        assert not torch.equal(model.whiten.bias, before), epoch
    model.start_epoch(2)  # frozen: neither gradient, momentum nor weight decay moves it
    bias, head, whiten = (
        t.detach().clone() for t in (model.whiten.bias, model.head.weight, model.whiten.weight)
    )
    _sgd_step(model, optimizer, seed=2)
    assert torch.equal(model.whiten.bias, bias) and torch.equal(model.whiten.weight, whiten)
    assert not torch.equal(model.head.weight, head)
    # the CPU preset's model keeps a zero bias out of the optimiser altogether
    cpu = create_model("fastnet_cpu", 10)
    assert not cpu.whiten.bias.requires_grad and not cpu.whiten.bias.any()
    with pytest.raises(CnnkitError, match="whiten_bias_epochs"):
        create_model(ModelSpec("fastnet", options={"whiten_bias_epochs": -1}), 10)


def test_a_checkpoint_saved_without_the_whitening_bias_loads_as_a_zero_bias():
    model = create_model("fastnet", 10)
    model.init_from_data(_correlated_images(50).repeat(1, 1, 2, 2))
    model.eval()
    old = {k: v for k, v in model.state_dict().items() if k != "whiten.bias"}
    rebuilt = create_model("fastnet", 10)
    rebuilt.whiten.bias.data.fill_(1.0)
    rebuilt.load_state_dict(old)
    rebuilt.eval()
    assert not rebuilt.whiten.bias.any()
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(rebuilt(x), model(x))


def test_the_trainer_freezes_the_whitening_bias_after_three_epochs_and_on_resume(
    tmp_path, small_sample
):
    """cifar10-94 on part of the sample, stopped after epoch 3 and resumed: the bias
    learned in epochs 1-3 is kept through epoch 4 (the resumed optimiser loads with the bias in
    its group)."""
    cfg = build_config(
        overrides=dict(
            preset="cifar10-94",
            data=str(small_sample),
            epochs=4,
            batch_size=100,
            lookahead=0.0,
            project=str(tmp_path),
            name="cut",
        )
    )
    (tmp_path / "cut").mkdir()
    trainer = Trainer(cfg, tmp_path / "cut", progress=False)
    trainer.stop = StopAfter(3 * trainer.steps)
    assert trainer.fit().interrupted
    cut = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    assert cut["epoch"] == 3 and cut["state_dict"]["whiten.bias"].abs().sum() > 0
    done = torch.load(cnnkit.train(resume=tmp_path / "cut", progress=False).last, weights_only=True)
    assert done["epoch"] == 4
    assert torch.equal(done["state_dict"]["whiten.bias"], cut["state_dict"]["whiten.bias"])
    assert not torch.equal(done["state_dict"]["head.weight"], cut["state_dict"]["head.weight"])


def test_presets_are_listed_with_a_measured_line_and_valid_configs():
    names = [p.name for p in list_presets()]
    assert {"cifar10-94", "cifar10-cpu"} <= set(names)
    for preset in list_presets():
        assert preset.measured
        cfg = TrainConfig.from_dict(preset_config(preset.name))
        assert cfg.preset == preset.name
        if "cifar10" in preset.name:  # cifar10-94, ..., dcgan-cifar10
            assert cfg.data == "cifar10"  # a named dataset; --data points it at a folder
        else:  # detect-pennfudan names no data: it takes --data
            assert "data" not in preset.config
    text = format_presets()
    assert "cifar10-cpu" in text and "measured:" in text and "--nesterov" in text


def test_an_unknown_preset_suggests_the_closest():
    with pytest.raises(CnnkitError, match="did you mean 'cifar10-cpu'"):
        preset_config("cifar10-cp")
    with pytest.raises(CnnkitError, match="did you mean 'cifar10-94'"):
        build_config(overrides={"preset": "cifar10_94"})


def test_flags_and_yaml_override_the_preset(tmp_path):
    base = preset_config("cifar10-cpu")
    cfg = build_config(overrides={"preset": "cifar10-cpu", "epochs": 2, "lr": 0.1})
    assert (cfg.epochs, cfg.lr) == (2, 0.1)
    assert (cfg.model, cfg.batch_size, cfg.tta) == (base["model"], base["batch_size"], base["tta"])
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text("preset: cifar10-cpu\nepochs: 3\nbatch_size: 100\n")
    cfg = build_config(run_yaml, {"batch_size": 50, "flip": False})
    assert (cfg.epochs, cfg.batch_size, cfg.flip) == (3, 50, False)
    assert cfg.crop_padding == base["crop_padding"] and cfg.preset == "cifar10-cpu"
    # no preset: the dataclass defaults, untouched
    assert build_config(overrides={"epochs": 1}).model == TrainConfig().model
    # a flag equal to the dataclass default still wins over the preset
    assert build_config(overrides={"preset": "cifar10-cpu", "val_split": 0.1}).val_split == 0.1


def test_a_directly_built_config_takes_the_preset_for_fields_left_at_defaults():
    base = preset_config("cifar10-cpu")
    cfg = TrainConfig(preset="cifar10-cpu", epochs=3, data="cifar10-sample")
    assert (cfg.epochs, cfg.data) == (3, "cifar10-sample")
    assert (cfg.model, cfg.optimizer, cfg.tta) == (base["model"], base["optimizer"], base["tta"])
    assert TrainConfig.from_dict(cfg.to_dict()).to_dict() == cfg.to_dict()


@pytest.mark.parametrize(
    ("preset", "model"),
    [
        ("cifar10-cpu", "fastnet_cpu"),
        ("cifar10-94", "fastnet"),
        ("cifar10-94-muon", "fastnet_muon"),
        ("cifar10-95", "fastnet_wide"),
    ],
)
def test_tiny_preset_run_end_to_end(tmp_path, small_sample, preset, model):
    """Each preset on part of the bundled sample for two epochs: whitening init, training,
    TTA test, and the run's time split as airbench's clock counts it."""
    result = cnnkit.train(
        preset=preset,
        data=str(small_sample),
        epochs=2,
        batch_size=100,
        project=str(tmp_path),
        name="tiny",
        progress=False,
    )
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["epochs_done"] == 2 and metrics["tta"] == "flip-translate"
    # the run's TTA figure is best.pt's with that TTA on the 200 test images, as evaluate finds
    # in the run's precision (cifar10-cpu's bf16 moves a test image or two against fp32)
    precision = torch.load(result.best, weights_only=True)["config"]["precision"]
    report = cnnkit.evaluate(
        result.run_dir, tta="flip-translate", precision=precision, out_dir=None, progress=False
    )
    assert sum(report.support) == 200 == metrics["test_images"]
    assert metrics["test_accuracy_tta"] == pytest.approx(report.top1, abs=1e-6)
    assert metrics["test_accuracy"] == pytest.approx(report.top1_without_tta, abs=1e-6)
    assert (result.run_dir / "history.csv").is_file() and result.best.is_file()
    timing = metrics["timing"]
    assert timing["init"] > 0 and timing["training"] > 0 and timing["test_evaluation"] > 0
    parts = timing["init"] + timing["training"] + timing["test_evaluation"]
    assert timing["timed"] == pytest.approx(parts, abs=2e-3)
    epochs = [row["seconds"] for row in result.history]  # training steps only, per epoch
    assert timing["training"] == pytest.approx(sum(epochs), abs=2e-3)
    assert timing["training"] < metrics["wall_seconds"]  # which adds validation, checkpoints
    ckpt = torch.load(result.best, weights_only=True)
    assert ckpt["config"]["preset"] == preset and ckpt["model"]["name"] == model
    assert ckpt["state_dict"]["whiten.weight"].abs().sum() > 0  # set from data, then saved
    clf = cnnkit.load(result.run_dir)
    assert clf.predict(torch.zeros(32, 32, 3, dtype=torch.uint8).numpy()).label


def test_presets_command_lists_every_preset(capsys):
    from cnnkit.cli import main
    from cnnkit.presets import PRESETS

    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in PRESETS) and "measured:" in out
