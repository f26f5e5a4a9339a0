"""Which data a name or path means, and which data a run is evaluated on, from any directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import cnnkit
from cnnkit.cli import main
from cnnkit.data.datasets import data_location, evaluation_data
from cnnkit.errors import CnnkitError
from image_files import make_split

TINY = "conv2d:8,relu,global_avg_pool,dense"
SAMPLE = "cifar10-sample"


def test_a_bare_dataset_name_means_the_dataset_in_load_data_and_data_location(
    tmp_path, monkeypatch
):
    """A folder named like a dataset does not shadow the name (in either function); ./NAME or a
    Path names the folder (in both)."""
    make_split(tmp_path / SAMPLE / "train", {"a": 2, "b": 2})
    monkeypatch.chdir(tmp_path)
    kw = dict(cache_dir=tmp_path / "cache", progress=False)
    named = cnnkit.load_data(SAMPLE, **kw)
    assert len(named.classes) == 10 and len(named.test) == 500  # the bundled sample
    assert data_location(SAMPLE) == SAMPLE
    folder = str(tmp_path / SAMPLE)
    for spec in (f"./{SAMPLE}", Path(SAMPLE)):
        assert cnnkit.load_data(spec, **kw).classes == ["a", "b"]
        assert data_location(spec) == folder


def test_evaluation_data_prefers_the_data_given_then_the_recorded_location():
    config = {"data": "pets"}
    assert evaluation_data("other", "/abs/pets", config) == "other"
    assert evaluation_data(None, "/abs/pets", config) == "/abs/pets"
    assert evaluation_data(None, None, config) == "pets"  # a checkpoint from before the record
    with pytest.raises(CnnkitError, match="say which data"):
        evaluation_data(None, None, {})


def test_evaluate_finds_the_runs_data_from_another_directory(tmp_path, monkeypatch, capsys):
    """Trained on the relative path "pets", evaluated from a directory holding other "pets"
    images and from one holding none: the Python API and the CLI evaluate the run's own 4
    held-out images both times."""
    make_split(tmp_path / "a" / "pets", {"cat": 10, "dog": 10})
    make_split(tmp_path / "b" / "pets", {"cat": 3, "dog": 3}, start=20)
    (tmp_path / "c").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    run = cnnkit.train(
        data="pets",
        model=TINY,
        epochs=1,
        val_split=0.2,
        project=str(tmp_path / "runs"),
        name="r",
        progress=False,
    )
    for elsewhere in ("b", "c"):
        monkeypatch.chdir(tmp_path / elsewhere)
        report = cnnkit.evaluate(str(run.run_dir), out_dir=None, progress=False)
        assert sum(report.support) == 4, elsewhere
        capsys.readouterr()
        assert main(["evaluate", str(run.run_dir), "--json", "--no-progress"]) == 0
        assert json.loads(capsys.readouterr().out)["images"] == 4, elsewhere
