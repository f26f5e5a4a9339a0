"""Metrics and reports for a trained classifier."""

from cnnkit.tasks.classify.metrics import ClassificationReport, classification_report, topk_accuracy
from cnnkit.tasks.classify.report import print_report, write_report

__all__ = [
    "ClassificationReport",
    "classification_report",
    "print_report",
    "topk_accuracy",
    "write_report",
]
