"""The classic network on the real CIFAR-10 (../shared/data): two epochs reach 55%+."""

import json

import pytest

from cnnkit.cli import main


@pytest.mark.slow
@pytest.mark.shared_data
def test_simple_cnn_two_epochs_on_full_cifar10_reaches_55_percent(shared_cifar10, tmp_path):
    rc = main(
        [
            "train",
            "--data",
            str(shared_cifar10),
            "--model",
            "simple_cnn",
            "--epochs",
            "2",
            "--batch-size",
            "64",
            "--lr",
            "1e-3",
            "--val-split",
            "0",
            "--project",
            str(tmp_path),
            "--name",
            "full",
            "--no-progress",
        ]
    )
    assert rc == 0
    metrics = json.loads((tmp_path / "full" / "metrics.json").read_text())
    assert metrics["test_images"] == 10_000
    assert metrics["test_accuracy"] >= 0.55, metrics
