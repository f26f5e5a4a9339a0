"""Interpretation of a classifier's evaluation: calibration against torchmetrics, balanced
accuracy on a long tail, the most confused pairs, top losses, and the files evaluate writes."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from PIL import Image
from torchmetrics.classification import MulticlassCalibrationError

import cnnkit
from cnnkit.tasks.classify.interpret import (
    balanced_accuracy,
    calibration,
    most_confused,
    top_losses,
)
from cnnkit.tasks.classify.metrics import classification_report


def test_the_expected_calibration_error_is_torchmetrics_one():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(500, 7, generator=generator) * 3
    labels = torch.randint(0, 7, (500,), generator=generator)
    probs = logits.softmax(1)
    ece, bins = calibration(probs, labels)
    reference = MulticlassCalibrationError(num_classes=7, n_bins=15, norm="l1")(probs, labels)
    assert ece == pytest.approx(float(reference), abs=1e-6)
    assert sum(b.count for b in bins) == 500 and len(bins) == 15


def test_balanced_accuracy_sees_what_a_long_tail_hides():
    labels = torch.tensor([0] * 90 + [1] * 10)
    logits = torch.tensor([[5.0, 0.0]]).repeat(100, 1)  # always class 0
    report = classification_report(logits, labels, ["head", "tail"])
    assert report.top1 == pytest.approx(0.9)
    assert report.balanced_accuracy == pytest.approx(0.5)
    assert balanced_accuracy(torch.tensor([[3, 1], [0, 0]])) == pytest.approx(0.75)  # no tail


def test_most_confused_pairs_and_top_losses_come_largest_first():
    confusion = torch.tensor([[5, 1, 7], [0, 9, 0], [2, 3, 4]])
    assert most_confused(confusion, ["a", "b", "c"]) == [
        ("a", "c", 7),
        ("c", "b", 3),
        ("c", "a", 2),
        ("a", "b", 1),
    ]
    logits = torch.tensor([[4.0, 0.0], [0.0, 4.0], [1.0, 0.0], [9.0, 0.0]])
    labels = torch.tensor([0, 0, 1, 1])
    assert top_losses(logits, labels, 2) == [3, 1]  # the surest wrong answers


def test_evaluate_writes_calibration_confusions_and_top_losses(cls_run, tmp_path, capsys):
    out = tmp_path / "eval"
    report = cnnkit.load(cls_run.run_dir).evaluate("cifar10-sample", out_dir=out, progress=False)
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["expected_calibration_error"] <= 1
    assert metrics["balanced_accuracy"] == pytest.approx(report.balanced_accuracy)
    losses = metrics["top_losses"]
    assert len(losses) == 16 and losses == sorted(losses, key=lambda e: -e["loss"])
    assert all(e["true"] != e["predicted"] for e in losses[:5])  # the worst are mistakes
    assert losses[0]["path"].endswith(".png")
    with open(out / "most_confused.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["true", "predicted", "images"] and int(rows[1][2]) >= int(rows[2][2])
    assert Image.open(out / "reliability.png").size[0] > 100
    assert Image.open(out / "top_losses.png").size[0] > 400
    from cnnkit.tasks.classify import print_report

    print_report(report)
    printed = capsys.readouterr().out
    assert "balanced accuracy" in printed and "most confused:" in printed


def test_a_rate_over_no_images_is_said_to_be_undefined_not_zero(capsys):
    from cnnkit.tasks.classify import print_report

    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0]])
    report = classification_report(
        logits, torch.zeros(3, dtype=torch.long), ["benign", "malignant"]
    )
    print_report(report)
    printed = " ".join(capsys.readouterr().out.split())  # rich wraps at the terminal's width
    assert "sensitivity n/a (no positive image)" in printed and "specificity 66.67%" in printed
    both = classification_report(logits, torch.tensor([0, 1, 1]), ["benign", "malignant"])
    print_report(both)
    assert "sensitivity 50.00% specificity 100.00%" in " ".join(capsys.readouterr().out.split())
