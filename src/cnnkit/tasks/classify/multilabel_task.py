"""The final test of a multi-label run (metrics.json's test fields), kept beside the
classification task that calls it."""

from __future__ import annotations

from typing import Any

from torch import nn

from cnnkit.tasks.classify.loop import predict_logits
from cnnkit.tasks.classify.multilabel import choose_label_thresholds, multilabel_report
from cnnkit.tasks.classify.tta import tta_and_plain_logits


def multilabel_test(task: Any, model: nn.Module, best_epoch: int) -> dict[str, Any]:
    """best.pt on the test split (with TTA when asked): macro AUC and AP, label accuracy and
    exact match at the thresholds best.pt's own validation pass chose (stored on the task, so
    best.pt and metrics.json agree)."""
    test, val, cfg = task.data.test, task.data.val, task.cfg
    if val is not None and len(val):
        val_logits = predict_logits(model, val.images, task.images_in, task.precision)
        task.label_thresholds = choose_label_thresholds(val_logits.sigmoid(), val.labels)
    tta, plain = tta_and_plain_logits(
        model, test.images, task.images_in, task.precision, mode=cfg.tta
    )
    report = multilabel_report(plain, test.labels, task.data.classes, task.label_thresholds)
    summary = report.to_dict()
    fields: dict[str, Any] = {
        "test_loss": report.loss,
        "test_accuracy": report.label_accuracy,
        "test_exact_match": report.exact_match,
        "test_auc": summary["auc"],
        "test_average_precision": summary["average_precision"],
        "test_sensitivity": summary["sensitivity"],
        "test_specificity": summary["specificity"],
        "test_images": len(test),
        "label_thresholds": task.label_thresholds,
    }
    chosen = ", chosen on this split" if task.data.val_source == "test" else ""
    auc = "-" if summary["auc"] is None else f"{summary['auc']:.4f}"
    print(
        f"test (best.pt, epoch {best_epoch}{chosen}): macro ROC AUC {auc}  label accuracy "
        f"{report.label_accuracy:.2%}  exact match {report.exact_match:.2%}  loss "
        f"{report.loss:.4f}"
    )
    if cfg.tta != "none":
        with_tta = multilabel_report(tta, test.labels, task.data.classes, task.label_thresholds)
        fields.update(tta=cfg.tta, test_accuracy_tta=with_tta.label_accuracy)
        print(f"test label accuracy with TTA ({cfg.tta}): {with_tta.label_accuracy:.2%}")
    return fields
