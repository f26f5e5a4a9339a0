"""Lookahead (airbench's): the pull-back formula worked out by hand, and the trainer's use of it."""

import pytest
import torch

import cnnkit
from cnnkit.config import TrainConfig
from cnnkit.engine.fit import Trainer
from cnnkit.engine.lookahead import Lookahead
from stop_after import StopAfter
from test_ema import small_net, train_step, weights


def test_rho_grows_with_the_cube_of_progress_to_decay_to_the_every():
    la = Lookahead(decay=0.95, every=5, power=3.0)
    assert la.rho(0.0) == 0.0
    assert la.rho(0.5) == pytest.approx(0.95**5 * 0.125)
    assert la.rho(1.0) == pytest.approx(0.95**5)
    assert la.rho(2.0) == pytest.approx(0.95**5)  # progress is clamped to the run


def test_nothing_happens_before_start_then_a_snapshot_then_pulls():
    torch.manual_seed(0)
    model = small_net()
    la = Lookahead(decay=0.9, every=3, start=0.5)
    for step in range(1, 6):  # steps 1-5 of 12: before start (step 3) or off the beat
        train_step(model, seed=step)
        la.step(model, step, total_steps=12)
        assert not la.started
    la.sync(model)  # before the snapshot: leaves the model alone
    train_step(model, seed=6)
    la.step(model, 6, total_steps=12)  # progress 0.5, a multiple of 3: the snapshot
    assert la.started
    slow = weights(model)
    for step in (7, 8, 9):
        train_step(model, seed=step)
        fast = weights(model)
        la.step(model, step, total_steps=12)
    rho = 0.9**3 * 0.75**3  # the pull at step 9: progress 0.75
    for now, s, f in zip(model.parameters(), slow, fast, strict=True):
        torch.testing.assert_close(now, rho * s + (1 - rho) * f)
    bn = model[1]
    assert la.state_dict()["state_dict"]["1.running_mean"].equal(bn.running_mean)


def test_sync_gives_the_model_the_slow_weights_and_state_round_trips():
    torch.manual_seed(0)
    model = small_net()
    la = Lookahead(decay=0.9, every=1, start=0.0)
    la.step(model, 1, total_steps=2)  # snapshot
    train_step(model, seed=1)
    la.step(model, 2, total_steps=2)  # pull
    slow = weights(model)
    train_step(model, seed=2)
    other = Lookahead(decay=0.9, every=1)
    other.load_state_dict(la.state_dict(), model)
    other.sync(model)
    for now, s in zip(model.parameters(), slow, strict=True):
        assert torch.equal(now, s)
    fresh = Lookahead()
    fresh.load_state_dict({}, model)  # saved before its snapshot
    assert not fresh.started and fresh.state_dict() == {}


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="decay"):
        Lookahead(decay=1.5)
    with pytest.raises(ValueError, match="every"):
        Lookahead(every=0)
    with pytest.raises(ValueError, match="start"):
        Lookahead(start=2.0)


# a short SGD run on the bundled sample: 1,800 training images, 29 steps an epoch at batch 64
SAMPLE_SGD = dict(data="cifar10-sample", optimizer="sgd", lr=0.05, precision="fp32")


def test_trainer_evaluates_the_slow_weights_and_resumes_mid_epoch_bit_identical(tmp_path):
    common = dict(SAMPLE_SGD, epochs=2, batch_size=64, lookahead=0.9, project=str(tmp_path))
    full = cnnkit.train(name="full", progress=False, **common)
    assert full.metrics["lookahead"] == 0.9
    last = torch.load(full.last, weights_only=True)
    slow = last["lookahead"]["state_dict"]
    for key, value in last["state_dict"].items():  # synced at the end of the epoch
        assert torch.equal(value, slow[key]), key

    # 29 steps an epoch, 58 in all: the snapshot at step 20 (the first multiple of 5 from 30%
    # of the run), pulls at 25, 30, ..., 40. Stop at step 12 of epoch 2 (step 41): the weights
    # have moved since the pull, so last.pt must carry the slow weights apart from the model's
    (tmp_path / "cut").mkdir()
    trainer = Trainer(TrainConfig(name="cut", **common), tmp_path / "cut", progress=False)
    trainer.stop = StopAfter(29 + 12)
    assert trainer.fit().interrupted
    cut = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    assert cut["progress"]["step"] == 12
    key = "dense_2.weight"
    assert not torch.equal(cut["state_dict"][key], cut["lookahead"]["state_dict"][key])
    resumed = cnnkit.train(resume=tmp_path / "cut", progress=False)
    a = torch.load(resumed.last, weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], last["state_dict"][k]) for k in a)


def test_lookahead_changes_the_trained_weights(tmp_path):
    common = dict(SAMPLE_SGD, epochs=1, batch_size=64, project=str(tmp_path), progress=False)
    plain = torch.load(cnnkit.train(name="plain", **common).last, weights_only=True)
    pulled = torch.load(cnnkit.train(name="la", lookahead=0.9, **common).last, weights_only=True)
    assert pulled["lookahead"] is not None and plain["lookahead"] is None
    key = "dense_2.weight"
    assert not torch.equal(plain["state_dict"][key], pulled["state_dict"][key])


def test_lookahead_out_of_range_is_one_line(capsys):
    from cnnkit.cli import main

    assert main(["train", "--lookahead", "1.5"]) == 2
    assert "lookahead must be a decay" in capsys.readouterr().err


def test_epochs_shorter_than_five_steps_pull_on_each_epochs_last_step(tmp_path):
    run = cnnkit.train(
        **SAMPLE_SGD,
        epochs=4,
        batch_size=1024,  # 2 steps an epoch
        lookahead=0.9,
        project=str(tmp_path),
        name="short",
        progress=False,
    )
    last = torch.load(run.last, weights_only=True)
    # 8 steps: the snapshot at step 4 (the first even step from 30% of the run), pulls at the
    # last steps of epochs 3 and 4 -- with pulls every 5 steps, epochs would end on a snapshot
    # that the steps since then never reach
    assert last["lookahead"]["updates"] == 2
    slow = last["lookahead"]["state_dict"]
    assert all(torch.equal(v, slow[k]) for k, v in last["state_dict"].items())
