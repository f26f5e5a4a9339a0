"""The training step's running totals: read back every step or every few, the same numbers."""

import pytest
import torch
from torch import nn

from cnnkit.data import ImageSet
from cnnkit.engine.loop import EpochProgress
from cnnkit.tasks.classify.loop import train_one_epoch
from step_context import sgd_step_context


def one_epoch(sync_every: int, stop_after: int | None = None) -> tuple[EpochProgress, list[int]]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
    gen = torch.Generator().manual_seed(1)
    images = ImageSet(
        torch.randint(0, 256, (100, 3, 8, 8), dtype=torch.uint8, generator=gen),
        torch.randint(0, 4, (100,), generator=gen),
        ["a", "b", "c", "d"],
    )
    ctx = sgd_step_context(model, lr=0.1)
    progress = EpochProgress()
    seen_at_step: list[int] = []
    train_one_epoch(
        model,
        images,
        ctx,
        8,
        torch.Generator().manual_seed(0),
        progress,
        should_stop=lambda: stop_after is not None and progress.step >= stop_after,
        on_step=lambda p: seen_at_step.append(p.seen),
        sync_every=sync_every,
    )
    return progress, seen_at_step


def test_deferred_read_back_gives_the_same_totals():
    every, seen_every = one_epoch(1)
    deferred, seen_deferred = one_epoch(4)
    assert every.step == deferred.step == 13  # 100 images, batches of 8
    assert every.seen == deferred.seen == 100 and every.correct == deferred.correct > 0
    assert deferred.loss_sum == pytest.approx(every.loss_sum, rel=1e-6)
    assert seen_every == [min(8 * (i + 1), 100) for i in range(13)]
    assert seen_deferred[3] == 32 and seen_deferred[4] == 32  # read back at steps 4, 8, 12, end


def test_a_stop_between_read_backs_keeps_the_steps_done():
    stopped, _ = one_epoch(4, stop_after=6)
    assert (stopped.step, stopped.seen) == (6, 48)
    full, _ = one_epoch(1, stop_after=6)
    assert stopped.correct == full.correct
    assert stopped.loss_sum == pytest.approx(full.loss_sum, rel=1e-6)


def test_a_run_whose_loss_becomes_nan_stops_with_one_line_before_saving_it(tmp_path):
    import cnnkit
    from cnnkit.errors import CnnkitError

    with pytest.raises(CnnkitError, match="diverged in epoch 1.*nothing was saved"):
        cnnkit.train(
            data="cifar10-sample",
            model="simple_cnn",
            optimizer="sgd",
            lr=1e9,
            epochs=3,
            project=str(tmp_path),
            name="boom",
            progress=False,
        )
    assert not (tmp_path / "boom" / "last.pt").exists()  # no NaN weights were written
