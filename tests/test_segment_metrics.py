"""Segmentation metrics and losses on cases worked out by hand."""

from __future__ import annotations

import pytest
import torch

from cnnkit.errors import CnnkitError
from cnnkit.tasks.segment.dataset import IGNORE_INDEX
from cnnkit.tasks.segment.losses import class_weights, dice_loss, segmentation_losses
from cnnkit.tasks.segment.metrics import confusion_matrix, segmentation_metrics

CLASSES = ["background", "person", "bike"]


def test_miou_per_class_iou_dice_and_pixel_accuracy_on_a_hand_computed_case():
    # truth: 6 background, 3 person, 1 ignored; prediction: 2 background pixels called person,
    # 1 person called background. Background: TP 4, FP 1, FN 2 -> IoU 4/7, Dice 8/11.
    # Person: TP 2, FP 2, FN 1 -> IoU 2/5, Dice 4/7. Bike: never present -> no IoU.
    truth = torch.tensor([[0, 0, 0, 0, 0, 0, 1, 1, 1, IGNORE_INDEX]])
    predicted = torch.tensor([[0, 0, 0, 0, 1, 1, 1, 1, 0, 2]])  # the ignored pixel says bike
    m = segmentation_metrics([predicted], [truth], CLASSES)
    assert m.confusion.tolist() == [[4, 2, 0], [1, 2, 0], [0, 0, 0]]
    assert m.per_class_iou == pytest.approx({"background": 4 / 7, "person": 2 / 5, "bike": None})
    assert m.per_class_iou["bike"] is None  # left out of the mean, not scored as 0
    assert m.miou == pytest.approx((4 / 7 + 2 / 5) / 2)
    assert m.per_class_dice["background"] == pytest.approx(8 / 11)
    assert m.dice == pytest.approx((8 / 11 + 4 / 7) / 2)
    assert m.pixel_accuracy == pytest.approx(6 / 9)  # the ignored pixel is not counted
    assert m.pixels == 9
    assert set(m.to_dict()) >= {"miou", "per_class_iou", "pixel_accuracy", "confusion_matrix"}


def test_a_class_predicted_but_never_true_counts_against_the_mean():
    truth = torch.zeros(1, 4, dtype=torch.long)
    predicted = torch.tensor([[0, 0, 2, 2]])
    m = segmentation_metrics([predicted], [truth], CLASSES)
    assert m.per_class_iou["bike"] == 0.0 and m.miou == pytest.approx((0.5 + 0.0) / 2)


def test_metrics_add_up_over_images_of_different_sizes():
    a_truth, a_pred = torch.tensor([[1, 1], [0, 0]]), torch.tensor([[1, 0], [0, 0]])
    b_truth, b_pred = torch.ones(3, 1, dtype=torch.long), torch.ones(3, 1, dtype=torch.long)
    both = segmentation_metrics([a_pred, b_pred], [a_truth, b_truth], CLASSES)
    summed = confusion_matrix(a_pred, a_truth, 3) + confusion_matrix(b_pred, b_truth, 3)
    assert torch.equal(both.confusion, summed)
    assert both.per_class_iou["person"] == pytest.approx(4 / 5)
    with pytest.raises(ValueError):
        confusion_matrix(a_pred, b_truth, 3)


def test_ignored_pixels_do_not_change_the_losses():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, generator=generator)
    masks = torch.randint(0, 3, (2, 8, 8), generator=generator)
    masks[:, :2] = IGNORE_INDEX
    other = logits.clone()
    other[:, :, :2] = torch.randn(2, 3, 2, 8, generator=generator) * 10  # only ignored pixels
    a = segmentation_losses(logits, masks, dice=1.0)
    b = segmentation_losses(other, masks, dice=1.0)
    for key in ("ce", "dice", "loss"):
        assert torch.allclose(a[key], b[key]), key
    assert torch.allclose(a["loss"], a["ce"] + a["dice"])


def test_dice_loss_is_zero_for_a_confident_right_answer_and_large_for_a_wrong_one():
    masks = torch.tensor([[[0, 1], [1, 2]]])
    right = torch.nn.functional.one_hot(masks, 3).permute(0, 3, 1, 2).float() * 50
    assert float(dice_loss(right, masks)) == pytest.approx(0.0, abs=1e-4)
    wrong = right.roll(1, dims=1)
    assert float(dice_loss(wrong, masks)) > 0.5


def test_a_batch_with_every_pixel_ignored_gives_a_zero_loss_not_nan():
    logits = torch.randn(1, 2, 4, 4, requires_grad=True)
    masks = torch.full((1, 4, 4), IGNORE_INDEX)
    loss = segmentation_losses(logits, masks)["loss"]
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_class_weights_auto_balances_by_median_frequency_and_checks_given_ones():
    counts = torch.tensor([900, 90, 10])  # frequencies 0.9, 0.09, 0.01; median 0.09
    auto = class_weights("auto", counts)
    assert auto.tolist() == pytest.approx([0.1, 1.0, 9.0], rel=1e-5)
    assert class_weights("none", counts) is None and class_weights(None, counts) is None
    assert class_weights("1,2,3", counts).tolist() == [1.0, 2.0, 3.0]
    for bad in ("1,2", "a,b,c", "-1,1,1", "0,0,0", "nan,1,1", "inf,1,1"):
        with pytest.raises(CnnkitError, match="class-weights"):
            class_weights(bad, counts)
    absent = class_weights("auto", torch.tensor([50, 0, 50]))
    assert absent.tolist() == [1.0, 0.0, 1.0]  # a class without pixels gets no weight


def test_classes_are_resized_a_few_at_a_time_exactly_as_all_at_once():
    from cnnkit.tasks.segment.batch import classes_in_window, window

    generator = torch.Generator().manual_seed(0)
    scores = torch.rand(40, 64, 64, generator=generator)  # more classes than one chunk
    win = window(50, 37, 64)  # a tall image enlarged to the canvas' height
    got = classes_in_window(scores, win)
    inner = scores[:, win.top : win.top + win.inner_height, win.left : win.left + win.inner_width]
    full = torch.nn.functional.interpolate(
        inner[None], size=(50, 37), mode="bilinear", align_corners=False
    )[0]
    assert got.shape == (50, 37) and torch.equal(got, full.argmax(0))


@pytest.mark.parametrize("classes", [2, 40])
def test_a_large_photo_is_resized_in_bands_of_rows_as_in_one_piece(classes):
    """Bands of rows (forced here with a small band size) give F.interpolate's classes, but
    where the two best classes are within float rounding of each other."""
    from cnnkit.tasks.segment.batch import classes_in_window, window

    generator = torch.Generator().manual_seed(1)
    scores = torch.rand(classes, 64, 64, generator=generator)
    for height, width in ((203, 157), (41, 300), (64, 64 * 3 + 1)):
        win = window(height, width, 64)
        banded = classes_in_window(scores, win, band_values=16 * width * 7)
        inner = scores[
            :, win.top : win.top + win.inner_height, win.left : win.left + win.inner_width
        ]
        full = torch.nn.functional.interpolate(
            inner[None], size=(height, width), mode="bilinear", align_corners=False
        )[0]
        top2 = full.topk(2, dim=0).values
        differ = banded != full.argmax(0)
        assert banded.shape == (height, width) and banded.dtype == torch.int64
        assert differ.sum() <= 0.001 * height * width
        assert ((top2[0] - top2[1])[differ] < 1e-5).all()


def test_a_set_with_no_labelled_pixel_reports_null_means_not_zero():
    truth = torch.full((3, 3), IGNORE_INDEX)
    values = segmentation_metrics([torch.zeros(3, 3, dtype=torch.long)], [truth], CLASSES)
    assert values.pixels == 0
    assert values.to_dict()["miou"] is None and values.to_dict()["pixel_accuracy"] is None
