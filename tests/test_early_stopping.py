"""EarlyStopping: patience counted exactly, both modes, min_delta, resumable state."""

import io
import math

import pytest
import torch

from cnnkit.engine.early_stopping import EarlyStopping
from cnnkit.errors import CnnkitError


def run(stopper: EarlyStopping, values: list[float]) -> list[bool]:
    return [stopper.step(v) for v in values]


def test_max_mode_stops_after_exactly_patience_epochs_without_improvement():
    es = EarlyStopping(patience=2)
    assert run(es, [0.5, 0.6, 0.6, 0.55]) == [False, False, False, True]
    assert es.best == 0.6 and es.best_epoch == 2  # an equal value is no improvement
    assert es.epochs_without_improvement == 2


def test_min_mode_and_an_improvement_resets_the_count():
    es = EarlyStopping(patience=3, mode="min")
    assert math.isinf(es.best) and es.best > 0 and es.best_epoch == 0
    assert run(es, [1.0, 0.8, 0.9, 0.85, 0.79]) == [False] * 5
    assert (es.best, es.best_epoch, es.epochs_without_improvement) == (0.79, 5, 0)
    assert run(es, [0.8, 0.8, 0.8]) == [False, False, True]


def test_min_delta_must_be_exceeded():
    es = EarlyStopping(patience=2, min_delta=0.1)
    assert run(es, [0.5, 0.55, 0.75]) == [False, False, False]
    assert (es.best, es.best_epoch) == (0.75, 3)  # 0.55 was within min_delta of 0.5
    es = EarlyStopping(patience=1, min_delta=0.25, mode="min")
    assert run(es, [2.0, 1.9]) == [False, True]
    assert (es.best, es.best_epoch) == (2.0, 1)


def test_nan_is_never_an_improvement():
    es = EarlyStopping(patience=2)
    assert run(es, [0.3, math.nan, math.nan]) == [False, False, True]
    assert es.best == 0.3


def test_state_round_trip_resumes_to_the_same_stop():
    values = [0.1, 0.3, 0.2, 0.4, 0.35, 0.38, 0.39, 0.2]
    straight = EarlyStopping(patience=3, min_delta=0.01)
    expected = run(straight, values)
    assert expected.index(True) == 6

    first = EarlyStopping(patience=3, min_delta=0.01)
    run(first, values[:5])
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed = EarlyStopping(patience=3, min_delta=0.01)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert run(resumed, values[5:]) == expected[5:]
    assert resumed.state_dict() == straight.state_dict()
    with pytest.raises(CnnkitError, match="mode"):
        EarlyStopping(patience=3, mode="min").load_state_dict(first.state_dict())


def test_bad_settings_are_user_errors():
    with pytest.raises(CnnkitError, match="patience"):
        EarlyStopping(patience=0)
    with pytest.raises(CnnkitError, match="min_delta"):
        EarlyStopping(patience=1, min_delta=-0.1)
    with pytest.raises(CnnkitError, match="did you mean 'max'"):
        EarlyStopping(patience=1, mode="maxx")
