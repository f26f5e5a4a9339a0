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
