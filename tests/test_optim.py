"""Optimisers and schedules by name."""

import pytest
import torch

from cnnkit.config import TrainConfig
from cnnkit.engine.optim import build_optimizer, build_scheduler


def lrs(schedule: str, epochs: int = 4, steps: int = 10, **kw) -> list[float]:
    cfg = TrainConfig(schedule=schedule, epochs=epochs, lr=0.1, **kw)
    w = torch.nn.Parameter(torch.zeros(1))
    opt = build_optimizer([w], cfg)
    sched = build_scheduler(opt, cfg, steps)
    seen = []
    for _ in range(epochs * steps):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return seen


def test_constant_schedule_keeps_the_rate():
    assert set(lrs("constant")) == {0.1}


def test_cosine_decays_to_near_zero():
    seen = lrs("cosine")
    assert seen[0] == pytest.approx(0.1)
    assert seen[-1] < 0.001
    assert all(a >= b for a, b in zip(seen, seen[1:], strict=False))


def test_onecycle_warms_up_then_anneals():
    seen = lrs("onecycle")
    peak = seen.index(max(seen))
    assert 0 < peak < len(seen) // 2
    assert max(seen) == pytest.approx(0.1)
    assert seen[-1] < 0.01 and seen[0] < 0.01


def test_warmup_is_linear():
    seen = lrs("constant", warmup_epochs=1)
    assert seen[0] == pytest.approx(0.01) and seen[9] == pytest.approx(0.1)


def test_sgd_nesterov_and_adamw_by_name():
    w = torch.nn.Parameter(torch.zeros(1))
    sgd = build_optimizer([w], TrainConfig(optimizer="sgd", nesterov=True, lr=0.1))
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["nesterov"]
    adamw = build_optimizer([w], TrainConfig(optimizer="adamw", weight_decay=0.05))
    assert isinstance(adamw, torch.optim.AdamW) and adamw.defaults["weight_decay"] == 0.05


def test_parameter_groups_from_generators_keep_their_options_and_use_the_fused_update():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    groups = (
        {"params": (p for p in m.parameters()), "lr": lr}
        for m, lr in zip(model, (1, 2), strict=True)
    )
    opt = build_optimizer(groups, TrainConfig(optimizer="adam", lr=0.1))
    assert [len(g["params"]) for g in opt.param_groups] == [2, 2]
    assert [g["lr"] for g in opt.param_groups] == [1, 2]
    assert opt.defaults["fused"]  # one kernel for the whole update, on the CPU too
    model(torch.ones(1, 3)).sum().backward()
    before = [p.detach().clone() for p in model.parameters()]
    opt.step()
    assert all(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))


def test_a_checkpoint_saved_without_fused_updates_resumes_with_them(tmp_path):
    import cnnkit

    common = dict(data="cifar10-sample", model="conv2d:8,relu,global_avg_pool,dense")
    run = cnnkit.train(**common, epochs=1, project=str(tmp_path), name="old", progress=False)
    ckpt = torch.load(run.last, weights_only=True)
    for group in ckpt["optimizer"]["param_groups"]:  # as cnnkit saved them before fusing
        group["fused"], group["foreach"] = None, None
    torch.save(ckpt, run.last)
    resumed = cnnkit.train(resume=run.run_dir, epochs=2, progress=False)
    assert resumed.metrics["epochs_done"] == 2
    groups = torch.load(resumed.last, weights_only=True)["optimizer"]["param_groups"]
    assert all(group["fused"] for group in groups)


def test_triangle_is_airbench94s_piecewise_linear_shape():
    seen = lrs("triangle", epochs=10, steps=10)  # 100 steps: peak at step 23
    assert seen[0] == pytest.approx(0.02)  # 0.2 of the peak
    assert seen[23] == pytest.approx(0.1) and max(seen) == pytest.approx(0.1)
    assert seen[-1] == pytest.approx(0.1 * (1 - 0.93 * 76 / 77))  # towards 0.07 at step 100
    rising, falling = seen[:24], seen[23:]
    assert all(a < b for a, b in zip(rising, rising[1:], strict=False))
    assert all(a > b for a, b in zip(falling, falling[1:], strict=False))


def test_a_resume_trains_at_the_learning_rate_and_decay_it_is_given(tmp_path):
    """`train --resume RUN --lr X` recorded X in config.yaml but kept last.pt's rate; the rate
    and weight decay given now are used, and the saved ones when none is given."""
    import cnnkit

    common = dict(data="cifar10-sample", model="conv2d:8,relu,global_avg_pool,dense")
    run = cnnkit.train(
        **common, epochs=1, lr=0.001, project=str(tmp_path), name="r", progress=False
    )
    again = cnnkit.train(resume=run.run_dir, epochs=2, lr=0.004, weight_decay=0.01, progress=False)
    assert [row["lr"] for row in again.history] == pytest.approx([0.001, 0.004])
    groups = torch.load(again.last, weights_only=True)["optimizer"]["param_groups"]
    assert all(g["lr"] == 0.004 and g["weight_decay"] == 0.01 for g in groups)
    kept = cnnkit.train(resume=again.run_dir, epochs=3, progress=False)
    assert kept.history[-1]["lr"] == pytest.approx(0.004)
