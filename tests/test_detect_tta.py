"""Detection test-time augmentation: mirrored boxes map back exactly, and weighted box fusion
on hand-made passes (flip TTA on a trained detector: test_detect_task.py)."""

from __future__ import annotations

import pytest
import torch

from cnnkit.errors import CnnkitError
from cnnkit.tasks.detect.tta import check_tta, fuse_detections, mirror_boxes


def dets(boxes, scores, labels):
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "scores": torch.tensor(scores, dtype=torch.float32),
        "labels": torch.tensor(labels, dtype=torch.int64),
    }


def test_a_box_mirrored_twice_is_itself_and_once_is_its_mirror_image():
    boxes = torch.tensor([[10.0, 5.0, 30.0, 25.0], [0.0, 0.0, 100.0, 40.0]])
    once = mirror_boxes(boxes, 100)
    assert once.tolist() == [[70.0, 5.0, 90.0, 25.0], [0.0, 0.0, 100.0, 40.0]]
    assert torch.equal(mirror_boxes(once, 100), boxes)


def test_fusion_averages_overlapping_boxes_by_score_and_ranks_lone_boxes_lower():
    first = dets([[0, 0, 10, 10], [50, 50, 60, 60]], [0.9, 0.6], [0, 0])
    second = dets([[2, 0, 12, 10]], [0.3], [0])  # the first object again, shifted by 2 px
    fused = fuse_detections([first, second], iou_threshold=0.5, max_detections=100)
    # (0.9 * [0, 0, 10, 10] + 0.3 * [2, 0, 12, 10]) / 1.2 = [0.5, 0, 10.5, 10]
    assert torch.allclose(fused["boxes"][0], torch.tensor([0.5, 0.0, 10.5, 10.0]))
    assert fused["scores"].tolist() == pytest.approx([(0.9 + 0.3) / 2, 0.6 / 2])
    assert torch.allclose(fused["boxes"][1], torch.tensor([50.0, 50.0, 60.0, 60.0]))
    assert fused["labels"].tolist() == [0, 0]


def test_fusion_keeps_classes_apart_and_caps_the_count():
    first = dets([[0, 0, 10, 10]], [0.8], [0])
    second = dets([[0, 0, 10, 10]], [0.7], [1])  # same place, other class: two objects
    fused = fuse_detections([first, second], 0.5, 100)
    assert sorted(fused["labels"].tolist()) == [0, 1]
    assert fused["scores"].tolist() == pytest.approx([0.4, 0.35])
    assert len(fuse_detections([first, second], 0.5, 1)["boxes"]) == 1
    empty = fuse_detections([dets([], [], []), dets([], [], [])], 0.5, 100)
    assert empty["boxes"].shape == (0, 4) and len(empty["scores"]) == 0


def test_a_box_between_two_objects_joins_only_the_one_it_overlaps_most():
    # two people side by side (IoU 0.25), and a box of the other pass between them that
    # overlaps both by more than 0.5, the first a little more
    first = dets([[0, 0, 10, 10], [6, 0, 16, 10]], [0.95, 0.10], [0, 0])
    second = dets([[2.9, 0, 12.9, 10]], [0.90], [0])
    fused = fuse_detections([first, second], 0.5, 100)
    weak = fused["scores"].argmin()
    assert fused["scores"].tolist() == pytest.approx([(0.95 + 0.90) / 2, 0.10 / 2])
    assert torch.allclose(fused["boxes"][weak], torch.tensor([6.0, 0.0, 16.0, 10.0]))


def test_fused_scores_below_the_score_threshold_are_dropped():
    first = dets([[0, 0, 10, 10], [50, 50, 60, 60]], [0.9, 0.6], [0, 0])
    second = dets([[0, 0, 10, 10]], [0.8], [0])
    fused = fuse_detections([first, second], 0.5, 100, score_threshold=0.5)
    assert fused["scores"].tolist() == pytest.approx([0.85])  # the lone 0.6 fell to 0.3


def test_an_unknown_mode_is_one_line():
    assert check_tta("flip") == "flip"
    with pytest.raises(CnnkitError, match="none or flip"):
        check_tta("scale")
