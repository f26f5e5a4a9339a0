"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cnnkit.models.weights import hub_checkpoint_dir

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs pytest workers (two): each, and every process its tests start, computes
    # on its share of the cores (one each on two), so the workers do not fight over them
    import torch

    _share = max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", 1)))
    os.environ.setdefault("OMP_NUM_THREADS", str(_share))
    torch.set_num_threads(_share)

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


@pytest.fixture(scope="session")
def small_sample(tmp_path_factory) -> Path:
    """Part of the bundled cifar10-sample: 50 train and 20 test images of each class (the
    first by name), for the preset runs whose networks are too wide to train on all 2,500
    images in a test's seconds."""
    import shutil

    import cnnkit

    sample = Path(cnnkit.__file__).parent / "data" / "samples" / "cifar10-sample"
    root = tmp_path_factory.mktemp("small-sample") / "data"
    for split, per_class in (("train", 50), ("test", 20)):
        for folder in sorted((sample / split).iterdir()):
            target = root / split / folder.name
            target.mkdir(parents=True)
            for image in sorted(folder.iterdir())[:per_class]:
                shutil.copy(image, target / image.name)
    return root
