"""Muon: Newton-Schulz orthogonalisation, its update, the SGD groups beside it, the builder,
the linear schedule, fastnet_muon's whitening bias, and a Muon run stopped and resumed."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import cnnkit
from cnnkit.config import TrainConfig, build_config
from cnnkit.engine.fit import Trainer
from cnnkit.engine.muon import Muon, orthogonalize
from cnnkit.engine.optim import build_optimizer, build_scheduler
from cnnkit.errors import CnnkitError
from cnnkit.models import create_model, resolve_spec
from cnnkit.models.fastnet import ShiftNorm
from cnnkit.models.summary import summarize
from stop_after import StopAfter


@pytest.mark.parametrize("shape", [(64, 576), (576, 64), (32, 32)])
def test_orthogonalize_brings_every_singular_value_near_one(shape):
    g = torch.Generator().manual_seed(0)
    # a badly conditioned matrix: singular values from 0.1 to 10
    u, _ = torch.linalg.qr(torch.randn(shape[0], min(shape), generator=g))
    v, _ = torch.linalg.qr(torch.randn(shape[1], min(shape), generator=g))
    s = torch.logspace(-1, 1, min(shape))
    m = u @ torch.diag(s) @ v.T
    out = orthogonalize(m, steps=5).float()
    assert out.shape == m.shape
    singular = torch.linalg.svdvals(out)
    assert singular.min() > 0.5 and singular.max() < 1.5, singular
    # same singular vectors: U^T out V is close to diagonal
    core = u.T @ out @ v
    off_diagonal = core - torch.diag(torch.diagonal(core))
    assert off_diagonal.abs().max() < 0.05
    with pytest.raises(ValueError, match="matrix"):
        orthogonalize(torch.ones(2, 2, 2))


def test_a_muon_step_is_orthogonal_and_keeps_the_filter_norm():
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(16, 8, 3, 3) * 3)
    opt = Muon([w], lr=0.1, momentum=0.0, normalize=True)
    w.grad = torch.randn_like(w)
    opt.step()
    after = w.detach().clone()
    w.grad = torch.randn_like(w)
    before = after
    opt.step()
    # the previous step left the filter at norm sqrt(16) plus one step; this one rescales it
    # to sqrt(16) again, then steps by lr times an orthogonal matrix
    step = (w.detach() - before * 4 / before.norm()).reshape(16, -1)
    singular = torch.linalg.svdvals(step.float()) / 0.1
    assert singular.min() > 0.5 and singular.max() < 1.5
    assert after.norm() == pytest.approx(4.0, rel=0.05)  # sqrt(16), then one small step


def _reference_muon(w: torch.Tensor, grads: list[torch.Tensor], lr: float, momentum: float):
    """Muon as published (fp32 here): Nesterov momentum, the filter rescaled to norm
    sqrt(out) before each step, then a step along the quintic Newton-Schulz iterate."""
    w, buf = w.clone(), torch.zeros_like(w)
    for g in grads:
        buf = momentum * buf + g
        d = (g + momentum * buf).reshape(len(g), -1)
        w = w * len(w) ** 0.5 / w.norm()
        x = d / d.norm()  # (out, in*k*k) is wide here: no transpose needed
        for _ in range(3):
            a = x @ x.T
            x = 3.4445 * x + (-4.7750 * a + 2.0315 * a @ a) @ x
        w = w - lr * x.reshape(w.shape)
    return w


def test_muon_with_momentum_follows_the_published_update():
    torch.manual_seed(2)
    w = nn.Parameter(torch.randn(16, 8, 3, 3))
    grads = [torch.randn(16, 8, 3, 3) for _ in range(5)]
    expected = _reference_muon(w.detach(), grads, lr=0.5, momentum=0.6)
    opt = Muon([w], lr=0.5, momentum=0.6, nesterov=True, ns_steps=3, normalize=True)
    last = None
    for g in grads:
        last = w.detach().clone()
        w.grad = g.clone()
        opt.step()
    step = (w.detach() - last).norm()
    # bf16 Newton-Schulz against fp32: about 4% of a step; normalising after the step instead
    # of before it, or plain momentum instead of Nesterov's, is 60-70%
    assert (w.detach() - expected).norm() < 0.15 * step


@pytest.mark.parametrize("nesterov", [True, False])
def test_the_sgd_groups_update_exactly_as_torch_sgd(nesterov):
    torch.manual_seed(1)
    a = nn.Parameter(torch.randn(5, 3))
    b = nn.Parameter(a.detach().clone())
    ours = Muon([a], lr=0.3, momentum=0.85, nesterov=nesterov, weight_decay=0.01, muon=False)
    ref = torch.optim.SGD([b], lr=0.3, momentum=0.85, nesterov=nesterov, weight_decay=0.01)
    for _ in range(4):
        grad = torch.randn(5, 3)
        a.grad, b.grad = grad.clone(), grad.clone()
        ours.step()
        ref.step()
    assert torch.allclose(a, b, atol=1e-6)
    state = ours.state_dict()  # round-trips like any torch optimiser
    again = Muon([nn.Parameter(a.detach().clone())], muon=False)
    again.load_state_dict(state)
    assert torch.equal(
        again.state[again.param_groups[0]["params"][0]]["momentum_buffer"],
        ours.state[a]["momentum_buffer"],
    )


def test_muon_groups_refuse_vectors():
    with pytest.raises(ValueError, match="2 or more"):
        Muon([nn.Parameter(torch.ones(3))])


def test_the_builder_gives_filters_to_muon_and_the_rest_to_sgd():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Flatten(), nn.LazyLinear(4))
    model(torch.zeros(1, 3, 8, 8))
    cfg = TrainConfig(
        optimizer="muon",
        lr=0.5,
        muon_lr=0.2,
        muon_momentum=0.6,
        momentum=0.9,
        nesterov=True,
        weight_decay=0.01,
    )
    params = list(model.parameters())
    groups = [{"params": params[:3], "lr": 0.05}, {"params": params[3:], "lr": 0.5}]
    opt = build_optimizer(groups, cfg)
    assert isinstance(opt, Muon)
    muon = [g for g in opt.param_groups if g["muon"]]
    sgd = [g for g in opt.param_groups if not g["muon"]]
    assert [p.ndim for g in muon for p in g["params"]] == [4]
    assert muon[0]["lr"] == pytest.approx(0.02)  # the group's 1/10 of lr carries over
    assert (muon[0]["momentum"], muon[0]["weight_decay"], muon[0]["normalize"]) == (0.6, 0, True)
    assert muon[0]["ns_steps"] == 3  # airbench94_muon's
    assert sum(len(g["params"]) for g in sgd) == len(params) - 1
    assert {g["momentum"] for g in sgd} == {0.9} and {g["weight_decay"] for g in sgd} == {0.01}
    assert opt.param_groups[-1]["muon"] is False  # the logged rate is the SGD one
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    before = [p.detach().clone() for p in params]
    opt.step()
    assert all(not torch.equal(x, p) for x, p in zip(before, params, strict=True))


def test_only_conv2d_filters_go_to_muon_and_pretrained_weights_are_refused():
    token = nn.Parameter(torch.zeros(1, 5, 8))  # a 3-D position embedding, say
    conv1d = nn.Parameter(torch.randn(4, 2, 3))
    opt = build_optimizer([token, conv1d], TrainConfig(optimizer="muon", lr=0.1))
    assert all(not g["muon"] for g in opt.param_groups)
    with pytest.raises(CnnkitError, match="muon trains from scratch"):
        TrainConfig(optimizer="muon", model="resnet18", pretrained="imagenet")


def test_the_lr_range_test_sweeps_lr_and_holds_muon_at_its_rate():
    from cnnkit.engine.lr_find import range_test_schedule

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4, 2))
    opt = build_optimizer(
        [p for p in model.parameters()], TrainConfig(optimizer="muon", lr=0.1, muon_lr=0.2)
    )
    sched = range_test_schedule(opt, lambda step: 10.0**step)
    for _ in range(3):
        opt.step()
        sched.step()
    assert len(opt.param_groups) == 2  # plain tensors: one Muon group, one SGD group
    rates = {g["muon"]: g["lr"] for g in opt.param_groups}
    assert rates[True] == pytest.approx(0.2) and rates[False] == pytest.approx(100.0)


def test_the_preset_rates_are_airbench94_muons_in_fastnets_parametrisation():
    """airbench94_muon (summed loss, batch 2,000): biases 0.053, head 0.67, decay 0.004 a step.
    fastnet's shifts (and fastnet_muon's whitening bias) learn 64x their rate; its head's
    logits are x 1/9 where airbench's are / 256, so a head rate maps by (9/256)^2."""
    cfg = TrainConfig(preset="cifar10-94-muon")
    batch = cfg.batch_size
    assert 64 * cfg.lr == pytest.approx(0.053 * batch, rel=0.01)
    assert cfg.lr == pytest.approx(0.67 * batch * (9 / 256) ** 2, rel=0.01)
    assert cfg.lr * cfg.weight_decay == pytest.approx(2e-6 * batch, rel=0.01)
    model = create_model("fastnet_muon", num_classes=10, input_size=(3, 32, 32))
    assert model.whiten.bias_multiplier**2 == pytest.approx(64)
    assert model.scale == pytest.approx(1 / 9)
    shifts = [m for m in model.modules() if isinstance(m, ShiftNorm)]
    assert shifts and all(m.bias_multiplier**2 == pytest.approx(64) for m in shifts)


def test_the_linear_schedule_falls_straight_to_zero():
    cfg = TrainConfig(schedule="linear", epochs=2, lr=0.1)
    w = nn.Parameter(torch.zeros(1))
    opt = build_optimizer([w], cfg)
    sched = build_scheduler(opt, cfg, 5)
    seen = []
    for _ in range(10):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([0.1 * (1 - i / 10) for i in range(10)])


def test_bad_muon_settings_are_one_line_errors():
    with pytest.raises(CnnkitError, match="muon_lr"):
        TrainConfig(optimizer="muon", muon_lr=0)
    with pytest.raises(CnnkitError, match="muon_momentum"):
        build_config(overrides={"muon_momentum": 1.0})
    with pytest.raises(CnnkitError, match="did you mean 'muon'"):
        TrainConfig(optimizer="muom")


def test_fastnet_muon_bias_is_the_same_function_learning_64x_faster():
    plain = create_model("fastnet", num_classes=10, input_size=(3, 32, 32))
    fast = create_model("fastnet_muon", num_classes=10, input_size=(3, 32, 32))
    fast.load_state_dict(plain.state_dict())
    with torch.no_grad():
        plain.whiten.bias.copy_(torch.linspace(-1, 1, 24))
        fast.whiten.bias.copy_(plain.whiten.bias / 8)  # stored / sqrt(64)
    plain.eval(), fast.eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(plain(x), fast(x), atol=1e-5)
    plain(x).sum().backward()
    fast(x).sum().backward()
    # the stored bias gets 8x the gradient, and an SGD step on it moves the output's bias 64x
    assert torch.allclose(fast.whiten.bias.grad, 8 * plain.whiten.bias.grad, rtol=1e-4)
    rows = [row.name for row in summarize(fast, (3, 32, 32)).rows]
    assert rows[0] == "whiten"  # the whitening conv is a module the summary sees
    with pytest.raises(CnnkitError, match="whiten_bias_lr_scale"):
        spec = resolve_spec("fastnet", whiten_bias_lr_scale=0)
        create_model(spec, num_classes=10, input_size=(3, 32, 32))


def test_a_muon_run_stopped_and_resumed_ends_where_an_unbroken_one_does(tmp_path, small_sample):
    """cifar10-94-muon on part of the sample: a run cut after epoch 1 and resumed matches
    one run straight through (Muon's momentum buffers and groups come back from last.pt)."""
    common = dict(
        preset="cifar10-94-muon",
        data=str(small_sample),
        epochs=2,
        batch_size=100,
        precision="fp32",
        project=str(tmp_path),
    )
    straight = cnnkit.train(**common, name="straight", progress=False)
    cfg = build_config(overrides={**common, "name": "cut"})
    (tmp_path / "cut").mkdir()
    trainer = Trainer(cfg, tmp_path / "cut", progress=False)
    trainer.stop = StopAfter(trainer.steps)
    assert trainer.fit().interrupted
    assert isinstance(trainer.optimizer, Muon)
    resumed = cnnkit.train(resume=tmp_path / "cut", progress=False)
    a = torch.load(straight.last, weights_only=True)["state_dict"]
    b = torch.load(resumed.last, weights_only=True)["state_dict"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), atol=1e-4), key
