"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cnnkit.models.weights import hub_checkpoint_dir

SHARED_CIFAR10 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10"


@pytest.fixture
def shared_cifar10() -> Path:
    """The real CIFAR-10 PNG folder (../shared/data/cifar10 from the repo root).

    Skipped when absent, unless CNNKIT_REQUIRE_SHARED_DATA=1, in which case the test fails.
    """
    if not (SHARED_CIFAR10 / "train").is_dir():
        if os.environ.get("CNNKIT_REQUIRE_SHARED_DATA") == "1":
            pytest.fail(f"CNNKIT_REQUIRE_SHARED_DATA=1 but {SHARED_CIFAR10} is missing")
        pytest.skip(f"shared CIFAR-10 not found at {SHARED_CIFAR10}")
    return SHARED_CIFAR10


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    """Offline, with a torch hub cache that holds nothing."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("CNNKIT_OFFLINE", "1")
    assert str(hub_checkpoint_dir()).startswith(str(tmp_path))
    return hub_checkpoint_dir()


# ---- small trained runs, shared by the export, serve, explain and interpretation tests ----
@pytest.fixture(scope="session")
def cls_run(tmp_path_factory):
    """simple_cnn trained for one epoch on the bundled cifar10-sample."""
    import cnnkit

    return cnnkit.train(
        data="cifar10-sample",
        model="simple_cnn",
        epochs=1,
        project=str(tmp_path_factory.mktemp("cls-runs")),
        name="c",
        progress=False,
    )


@pytest.fixture(scope="session")
def tiny_detector_run(tmp_path_factory):
    """(run, an image of its data): FCOS trained for two epochs on rectangles the test draws."""
    import cnnkit
    from test_detect_task import detect_options, write_masks_dataset

    data = write_masks_dataset(tmp_path_factory.mktemp("boxes") / "data")
    project = str(tmp_path_factory.mktemp("det-runs"))
    run = cnnkit.train(
        project=project, name="d", progress=False, **detect_options(data, report=True)
    )
    return run, data / "images" / "p0.png"


@pytest.fixture(scope="session")
def tiny_segmenter_run(tmp_path_factory):
    """(run, an image of its data): LR-ASPP trained for two epochs on drawn rectangles."""
    import cnnkit
    from test_segment_task import seg_options, write_dataset

    data = write_dataset(tmp_path_factory.mktemp("seg") / "data")
    project = str(tmp_path_factory.mktemp("seg-runs"))
    run = cnnkit.train(project=project, name="s", progress=False, **seg_options(data, report=True))
    return run, data / "images" / "s0.png"
