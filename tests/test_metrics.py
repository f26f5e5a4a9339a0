"""Metrics against values worked out by hand."""

import pytest
import torch

from cnnkit.tasks.classify import classification_report, topk_accuracy, write_report


def test_confusion_matrix_precision_recall_f1_by_hand(tmp_path):
    # true:      0 0 0 1 1 2
    # predicted: 0 0 1 1 2 2
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    predicted = torch.tensor([0, 0, 1, 1, 2, 2])
    logits = torch.nn.functional.one_hot(predicted, 3).float() * 5
    report = classification_report(logits, labels, ["a", "b", "c"])
    assert report.confusion.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert report.precision == pytest.approx([1.0, 0.5, 0.5])
    assert report.recall == pytest.approx([2 / 3, 0.5, 1.0])
    assert report.f1 == pytest.approx([0.8, 0.5, 2 / 3])
    assert report.support == [3, 2, 1]
    assert report.top1 == pytest.approx(4 / 6)
    paths = write_report(report, tmp_path / "eval")
    assert paths["confusion_png"].stat().st_size > 1000
    rows = paths["confusion_csv"].read_text().splitlines()
    assert rows[1] == "a,2,1,0"


def test_macro_f1_averages_the_classes_in_the_truth_or_the_predictions():
    """A held-out set of 2 of the model's 4 classes: d is neither true nor predicted (no F1 to
    average), c is predicted but never true (F1 0, counted), as scikit-learn's macro F1."""
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    predicted = torch.tensor([0, 0, 0, 1, 1, 1, 2, 0])
    logits = torch.nn.functional.one_hot(predicted, 4).float() * 5
    report = classification_report(logits, labels, ["a", "b", "c", "d"])
    assert report.f1 == pytest.approx([0.75, 4 / 7, 0.0, 0.0])
    assert report.macro_f1 == pytest.approx((0.75 + 4 / 7 + 0.0) / 3)
    assert report.to_dict()["macro_f1"] == pytest.approx(report.macro_f1)


def test_topk_accuracy():
    logits = torch.tensor([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0]])
    labels = torch.tensor([1, 0])
    assert topk_accuracy(logits, labels, 1) == 0.0
    assert topk_accuracy(logits, labels, 2) == 0.5
    assert topk_accuracy(logits, labels, 5) == 1.0  # k capped at the class count


def test_class_never_predicted_has_zero_precision_not_nan():
    logits = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    report = classification_report(logits, torch.tensor([0, 1]), ["a", "b"])
    assert report.precision == [0.5, 0.0]
    assert report.f1[1] == 0.0


def test_tied_logits_rank_as_argmax_does():
    """bf16 logits tie often; top-1 must be argmax's pick (the confusion matrix's), or a run's
    test accuracy and `cnnkit evaluate`'s disagree on the same logits."""
    logits = torch.zeros(6, 10)
    logits[:, 3] = logits[:, 7] = 1.0  # classes 3 and 7 tie for first
    labels = torch.tensor([3, 3, 3, 7, 7, 0])
    report = classification_report(logits, labels, [str(i) for i in range(10)])
    assert report.top1 == 0.5  # argmax picks 3, the first of the tied classes
    assert report.top1 == float(report.confusion.diag().sum()) / 6
    assert topk_accuracy(logits, labels, 2) == pytest.approx(5 / 6)  # 0 ranks 3rd
    assert topk_accuracy(logits, labels, 3) == 1.0
