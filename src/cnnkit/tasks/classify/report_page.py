"""A classifier's part of report.html: the test evaluation, its confusion, top losses with their
Grad-CAM, calibration, an augmented batch, and the first layer's filters and one image's
feature maps."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cnnkit.errors import CnnkitError
from cnnkit.report.page import Page
from cnnkit.report.run import RunFiles, test_evaluation
from cnnkit.tasks.classify.report import plot_confusion
from cnnkit.tasks.classify.roc import rate_text

CONFUSED_SHOWN = 10


def add_sections(
    page: Page, files: RunFiles, classifier: Any, data: str | os.PathLike, tmp: Path
) -> None:
    tta = str(files.config.get("tta") or "none")
    images, report, section = test_evaluation(page, classifier, data, tmp, tta=tta)
    if getattr(report, "multilabel", False):
        from cnnkit.tasks.classify.multilabel_report import add_multilabel_sections

        add_multilabel_sections(page, report, section, tmp)
        _augmented_batch(page, files, data, tmp)
        _what_it_learned(page, classifier, images, tmp)
        return
    figures = [
        ("top-1 accuracy", f"{report.top1:.2%}"),
        *(
            [("top-1 by argmax (the threshold decides above)", f"{report.argmax_top1:.2%}")]
            if report.argmax_top1 is not None
            else []
        ),
        ("top-5 accuracy", f"{report.top5:.2%}"),
        ("balanced accuracy", f"{report.balanced_accuracy:.2%}"),
        ("macro F1", f"{report.macro_f1:.3f}"),
        ("expected calibration error", f"{report.ece:.3f}"),
        ("loss", f"{report.loss:.4f}"),
    ]
    if report.auc is not None:
        figures += [("ROC AUC", f"{report.auc:.4f}")]
        figures += [("average precision", f"{report.average_precision:.4f}")]
    point = report.operating
    if point is not None:
        figures += [
            (f"sensitivity at {point.threshold:.3f}", rate_text(point.sensitivity, "positive")),
            (f"specificity at {point.threshold:.3f}", rate_text(point.specificity, "negative")),
        ]
    section.figures(figures)
    if point is not None:
        source = "chosen on validation" if report.threshold_chosen else "the default"
        section.text(
            f"Positive class: {report.classes[1]}; threshold {point.threshold:.3f} on its "
            f"probability ({source}, stored in best.pt and used by predict).",
            note=True,
        )
    if tta != "none" and report.top1_without_tta is not None:
        section.text(
            f"with test-time augmentation ({tta}), as the run's final test; without it top-1 "
            f"is {report.top1_without_tta:.2%}",
            note=True,
        )
    section.table(
        ["class", "precision", "recall", "F1", "images"],
        [
            [name, *(f"{v:.3f}" for v in (report.precision[i], report.recall[i], report.f1[i])),
             report.support[i]]
            for i, name in enumerate(report.classes)
        ],
    )  # fmt: skip

    plot_confusion(report, tmp / "confusion_normalised.png", normalize=True)
    confusion = page.section("Confusion matrix").images(
        [
            (tmp / "eval" / "confusion_matrix.png", "confusion matrix, counts"),
            (tmp / "confusion_normalised.png", "confusion matrix, normalised by row"),
        ]
    )
    if report.confused:
        confusion.heading("Most confused pairs")
        confusion.table(["true", "predicted as", "images"], report.confused[:CONFUSED_SHOWN])

    losses = page.section("Top losses")
    if report.top_losses:
        losses.text(
            "The test images the model was surest of and wrong about (true -> predicted, "
            "probability), each beside its Grad-CAM for the predicted class: where it looked.",
            note=True,
        )
        losses.image(tmp / "eval" / "top_losses.png", "top losses with Grad-CAM")
    else:
        losses.text("no test image was misclassified", note=True)

    page.image_section("ROC", tmp / "eval" / "roc.png", "ROC curve")
    page.image_section(
        "Calibration",
        tmp / "eval" / "reliability.png",
        "reliability diagram",
        "Bars on the diagonal mean the predicted probability is the chance of being right; "
        "below it, the model is overconfident.",
    )

    _augmented_batch(page, files, data, tmp)
    _what_it_learned(page, classifier, images, tmp)


def _augmented_batch(page: Page, files: RunFiles, data: str | os.PathLike, tmp: Path) -> None:
    from cnnkit.config import TrainConfig
    from cnnkit.data.show import show_batch

    cfg = TrainConfig.from_dict({**files.config, "data": str(data)}, source="config.yaml")
    try:
        shown = show_batch(
            str(data),
            cfg.augment,
            n=32,
            out=tmp / "batch.png",
            seed=cfg.seed,
            data_root=cfg.data_root,
            **cfg.augment_overrides(),
        )
    except CnnkitError as exc:  # the training images are gone: the rest of the page stands
        page.section("An augmented batch").text(f"not drawn: {exc}", note=True)
        return
    page.section("An augmented batch").image(shown.path, "augmented training images").text(
        f"32 training images as the first epoch's augmentation ({shown.augmentation.describe()}) "
        "gives them to the model.",
        note=True,
    )


def _what_it_learned(page: Page, classifier: Any, images: Any, tmp: Path) -> None:
    """The first layer's filters, and where they fire on one test image: its feature maps at
    that layer (the image beside them, enlarged)."""
    from PIL import Image

    from cnnkit.explain.layers import first_conv
    from cnnkit.explain.visuals import draw_features, draw_filters

    section = page.section("What the network learned")
    try:
        layer, path = draw_filters(classifier, tmp / "filters.png")
        section.heading(f"First-layer filters ({layer})").image(path, "first-layer filters")
        image = images.images[0].permute(1, 2, 0).numpy()
        name, _ = first_conv(classifier.model)
        layer, path = draw_features(classifier, image, tmp / "features.png", name, max_maps=32)
        scale = max(1, 192 // max(image.shape[:2]))
        shown = Image.fromarray(image).resize(
            (image.shape[1] * scale, image.shape[0] * scale), Image.Resampling.NEAREST
        )
        shown.save(tmp / "feature_image.png")
        section.heading(f"Feature maps of one test image at {layer}")
        section.images([(tmp / "feature_image.png", "the image"), (path, "feature maps")])
    except CnnkitError as exc:
        section.text(f"not drawn: {exc}", note=True)
