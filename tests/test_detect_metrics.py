"""COCO-style mAP: against pycocotools' COCOeval run directly, and hand-computable cases."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from cnnkit.tasks.detect.dataset import BoxTarget
from cnnkit.tasks.detect.metrics import detection_metrics, plot_pr_curves

CLASSES = ["person", "bike"]


def _xyxy(box: list[float]) -> list[float]:
    x, y, w, h = box
    return [x, y, x + w, y + h]


def _coco_fixture(tmp_path):
    """A COCO ground-truth file and a results file for 6 images, two classes: jittered hits at
    several IoUs, misses, false positives, a crowd box with a detection on it, an image with no
    detections and one with no objects."""
    rng = np.random.default_rng(7)
    images, annotations, results = [], [], []
    for image_id in range(1, 7):
        images.append({"id": image_id, "file_name": f"{image_id}.jpg", "width": 400, "height": 300})
        n_objects = 0 if image_id == 6 else int(rng.integers(2, 5))
        for _ in range(n_objects):
            w, h = rng.uniform(20, 120, 2).round(1)
            x, y = rng.uniform(0, 400 - w), rng.uniform(0, 300 - h)
            category = int(rng.integers(1, 3))
            box = [float(x), float(y), float(w), float(h)]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category,
                    "bbox": box,
                    "area": float(w * h),
                    "iscrowd": 0,
                }
            )
            if image_id == 5 or rng.random() < 0.2:  # image 5 has no detections; some misses
                continue
            shift = rng.normal(0, 0.06, 4) * [w, h, w, h]
            found = [box[0] + shift[0], box[1] + shift[1], w + shift[2], h + shift[3]]
            results.append(
                {
                    "image_id": image_id,
                    "category_id": category if rng.random() > 0.15 else 3 - category,
                    "bbox": [float(v) for v in found],
                    "score": float(rng.uniform(0.3, 1.0)),
                }
            )
        if image_id != 5:  # false positives anywhere
            for _ in range(int(rng.integers(0, 3))):
                w, h = rng.uniform(20, 80, 2)
                results.append(
                    {
                        "image_id": image_id,
                        "category_id": int(rng.integers(1, 3)),
                        "bbox": [float(rng.uniform(0, 300)), float(rng.uniform(0, 200)), w, h],
                        "score": float(rng.uniform(0.05, 0.9)),
                    }
                )
    crowd = [10.0, 10.0, 150.0, 120.0]  # a crowd of people in image 1, detected once
    annotations.append(
        {
            "id": len(annotations) + 1,
            "image_id": 1,
            "category_id": 1,
            "bbox": crowd,
            "area": crowd[2] * crowd[3],
            "iscrowd": 1,
        }
    )
    results.append(
        {"image_id": 1, "category_id": 1, "bbox": [20.0, 15.0, 60.0, 100.0], "score": 0.95}
    )
    gt = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(CLASSES)],
    }
    gt_path, dt_path = tmp_path / "gt.json", tmp_path / "results.json"
    gt_path.write_text(json.dumps(gt))
    dt_path.write_text(json.dumps(results))
    return gt_path, dt_path


def _ours_from_files(gt_path, dt_path):
    gt = json.loads(gt_path.read_text())
    results = json.loads(dt_path.read_text())
    ids = [image["id"] for image in gt["images"]]
    targets, predictions = [], []
    for image_id in ids:
        anns = [a for a in gt["annotations"] if a["image_id"] == image_id]
        targets.append(
            BoxTarget(
                [_xyxy(a["bbox"]) for a in anns],
                [a["category_id"] - 1 for a in anns],
                [bool(a["iscrowd"]) for a in anns],
            )
        )
        dets = [r for r in results if r["image_id"] == image_id]
        predictions.append(
            {
                "boxes": torch.tensor([_xyxy(r["bbox"]) for r in dets]).reshape(-1, 4),
                "scores": torch.tensor([r["score"] for r in dets]),
                "labels": torch.tensor([r["category_id"] - 1 for r in dets], dtype=torch.int64),
            }
        )
    return predictions, targets


def test_matches_pycocotools_cocoeval(tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt_path, dt_path = _coco_fixture(tmp_path)
    coco = COCO(str(gt_path))
    evaluation = COCOeval(coco, coco.loadRes(str(dt_path)), "bbox")
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    stats = evaluation.stats
    precision = evaluation.eval["precision"]  # (T, R, K, A, M)

    metrics = detection_metrics(*_ours_from_files(gt_path, dt_path), CLASSES)

    assert 0.2 < stats[0] < 0.9  # a fixture with real misses and false positives
    assert metrics.map == pytest.approx(stats[0], abs=1e-6)
    assert metrics.map_50 == pytest.approx(stats[1], abs=1e-6)
    assert metrics.map_75 == pytest.approx(stats[2], abs=1e-6)
    assert metrics.mar_100 == pytest.approx(stats[8], abs=1e-6)
    assert metrics.score == metrics.map
    for k, name in enumerate(CLASSES):
        at_all = precision[:, :, k, 0, -1]
        assert metrics.per_class[name] == pytest.approx(at_all[at_all > -1].mean(), abs=1e-6)
        at_50 = precision[0, :, k, 0, -1]
        assert metrics.per_class_50[name] == pytest.approx(at_50[at_50 > -1].mean(), abs=1e-6)
        assert metrics.pr_curves[name] == pytest.approx(at_50.tolist(), abs=1e-6)


def _box(x1, y1, x2, y2):
    return torch.tensor([[x1, y1, x2, y2]], dtype=torch.float32)


def test_perfect_predictions_score_one():
    targets = [
        BoxTarget([[10, 10, 50, 80], [60, 20, 90, 40]], [0, 1]),
        BoxTarget([[5, 5, 25, 45]], [0]),
    ]
    predictions = [
        {"boxes": t.boxes.clone(), "scores": torch.linspace(0.9, 0.5, len(t)), "labels": t.labels}
        for t in targets
    ]
    metrics = detection_metrics(predictions, targets, CLASSES)
    assert metrics.to_dict() == {
        "map": 1.0,
        "map_50": 1.0,
        "map_75": 1.0,
        "mar_100": 1.0,
        "per_class": {"person": 1.0, "bike": 1.0},
    }


def test_one_hit_one_miss_one_false_positive():
    # Two people; the best detection is exact, the next one is elsewhere, the second is missed:
    # precision 1 up to recall 0.5 (51 of COCO's 101 recall points), 0 after, at every IoU.
    targets = [BoxTarget([[0, 0, 100, 100], [200, 0, 260, 100]], [0, 0])]
    predictions = [
        {
            "boxes": torch.tensor([[0.0, 0, 100, 100], [120, 150, 160, 190]]),
            "scores": torch.tensor([0.9, 0.8]),
            "labels": torch.tensor([0, 0]),
        }
    ]
    metrics = detection_metrics(predictions, targets, CLASSES)
    assert metrics.map == pytest.approx(51 / 101, abs=1e-6)
    assert metrics.map_50 == pytest.approx(51 / 101, abs=1e-6)
    assert metrics.mar_100 == pytest.approx(0.5, abs=1e-6)
    assert metrics.per_class == {"person": pytest.approx(51 / 101, abs=1e-6), "bike": None}
    assert metrics.pr_curves["person"] == pytest.approx([1.0] * 51 + [0.0] * 50, abs=1e-9)


def test_iou_072_counts_at_five_of_ten_thresholds():
    targets = [BoxTarget([[0, 0, 100, 100]], [1])]
    predictions = [{"boxes": _box(0, 0, 100, 72), "scores": torch.tensor([0.5]), "labels": [1]}]
    metrics = detection_metrics(predictions, targets, CLASSES)
    assert metrics.map_50 == pytest.approx(1.0)
    assert metrics.map_75 == pytest.approx(0.0)
    assert metrics.map == pytest.approx(0.5)  # matched at IoU 0.50 ... 0.70, missed above


def test_crowd_boxes_are_ignored():
    boxes = [[0, 0, 50, 50], [100, 100, 200, 200]]
    predictions = [
        {
            "boxes": torch.tensor([[0.0, 0, 50, 50], [110, 105, 190, 200]]),
            "scores": torch.tensor([0.6, 0.9]),
            "labels": torch.tensor([0, 0]),
        }
    ]
    # The crowd (second box) is neither a miss nor does the detection on it count as wrong.
    crowd = detection_metrics(predictions, [BoxTarget(boxes, [0, 0], [False, True])], CLASSES)
    assert crowd.map_50 == pytest.approx(1.0)
    # Without the crowd flag the same detections find both people at IoU 0.5.
    plain = detection_metrics(predictions, [BoxTarget(boxes, [0, 0])], CLASSES)
    assert plain.map_50 == pytest.approx(1.0)
    assert plain.mar_100 < 1.0  # the second box's IoU (0.72) misses the higher thresholds
    # A detection on the crowd only, no other object: nothing to find, nothing wrong.
    only = detection_metrics(
        [{"boxes": _box(110, 105, 190, 200), "scores": torch.tensor([0.9]), "labels": [0]}],
        [BoxTarget([[100, 100, 200, 200]], [0], [True])],
        CLASSES,
    )
    assert only.per_class["person"] is None


def test_bad_labels_are_refused():
    with pytest.raises(ValueError, match="class indices 0..1"):
        detection_metrics(
            [{"boxes": _box(0, 0, 5, 5), "scores": torch.tensor([0.5]), "labels": [2]}],
            [BoxTarget([[0, 0, 5, 5]], [0])],
            CLASSES,
        )


def test_plot_pr_curves_writes_an_image(tmp_path):
    targets = [BoxTarget([[0, 0, 100, 100], [200, 0, 260, 100]], [0, 1])]
    predictions = [
        {
            "boxes": torch.tensor([[0.0, 0, 100, 100], [200.0, 0, 250, 100]]),
            "scores": torch.tensor([0.9, 0.8]),
            "labels": torch.tensor([0, 1]),
        }
    ]
    path = plot_pr_curves(detection_metrics(predictions, targets, CLASSES), tmp_path / "pr.png")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (600, 500)
