"""Detectors on cnnkit's backbones: build, train a step, predict, rebuild, freeze, post-process,
NMS, and torchvision's COCO detectors' weights (offline message, loading from the hub cache)."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision

from cnnkit.errors import CnnkitError
from cnnkit.models.summary import summarize
from cnnkit.tasks.detect.backbones import backbone_weights_file, packaged_mobilenet_v2_file
from cnnkit.tasks.detect.coco_weights import build_torchvision_detector, class_head_keys
from cnnkit.tasks.detect.dataset import BoxTarget
from cnnkit.tasks.detect.models import (
    DEFAULT_TRAINABLE_BLOCKS,
    build_detector,
    detector_from_record,
    detector_spec,
    list_detectors,
)
from cnnkit.tasks.detect.postprocess import (
    VOTE_CANDIDATES,
    PostProcess,
    apply_postprocess,
    filter_detections,
    nms,
)

SIZE = 128
NUM_CLASSES = 2
LOSSES = {
    "fcos": {"classification", "bbox_regression", "bbox_ctrness"},
    "retinanet": {"classification", "bbox_regression"},
    "ssdlite": {"classification", "bbox_regression"},
    "fasterrcnn": {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"},
}
KEEP_ALL = PostProcess(score_threshold=0.0, iou_threshold=0.5, max_detections=50)


def _batch() -> tuple[torch.Tensor, list[BoxTarget]]:
    """Two 128 px images (a bright box on noise each) and their boxes."""
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, SIZE, SIZE, generator=gen) * 0.3
    images[0, :, 20:100, 30:70] = 0.9
    images[1, :, 10:50, 60:120] = 0.8
    targets = [
        BoxTarget([[30, 20, 70, 100]], [0]),
        BoxTarget([[60, 10, 120, 50], [5, 70, 40, 120]], [1, 0], [False, True]),
    ]
    return images, targets


@pytest.mark.parametrize("arch", ["fcos", "retinanet", "ssdlite", "fasterrcnn"])
@pytest.mark.parametrize("backbone", ["mobilenet_v2", "efficientnet_lite0"])
def test_build_train_predict_rebuild(arch, backbone, empty_hub):
    torch.manual_seed(0)
    model = build_detector(f"{arch}_{backbone}", NUM_CLASSES, image_size=SIZE)
    assert model.spec.weights_kind == "imagenet"  # from the shipped files: the hub is empty
    images, targets = _batch()

    frozen = next(p for p in model.blocks()[0][0].parameters())
    trained = next(p for p in model.blocks()[-1][-1].parameters())
    before = (frozen.detach().clone(), trained.detach().clone())
    optimizer = torch.optim.SGD(model.param_groups(0.01), lr=0.01)
    model.train()
    losses = model(images, targets)
    assert set(losses) == LOSSES[arch]
    assert all(math.isfinite(v.item()) for v in losses.values())
    sum(losses.values()).backward()
    optimizer.step()
    assert torch.equal(frozen, before[0]) and not frozen.requires_grad
    assert not torch.equal(trained, before[1])

    model.eval()
    apply_postprocess(model, KEEP_ALL)
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2
    for det in out:
        assert 0 < len(det["boxes"]) <= KEEP_ALL.max_detections
        assert det["labels"].min() >= 0 and det["labels"].max() < NUM_CLASSES  # 0-based
        assert det["boxes"].min() >= 0 and det["boxes"].max() <= SIZE

    rebuilt = detector_from_record(model.record())
    rebuilt.load_state_dict(model.state_dict())
    rebuilt.eval()
    with torch.no_grad():
        again = rebuilt(list(images))  # a list of images works as the batch did
    for a, b in zip(out, again, strict=True):
        for key in ("boxes", "scores", "labels"):
            assert torch.equal(a[key], b[key])


def test_shipped_mobilenet_v2_file_is_torchvisions(empty_hub):
    path = packaged_mobilenet_v2_file()
    assert path is not None and path.name == "mobilenet_v2-b0353104.pth"
    assert backbone_weights_file("mobilenet_v2") == path
    model = build_detector("fcos", 1, image_size=SIZE)
    state = torch.load(path, weights_only=True)
    layer = model.model.backbone.body.features_1.conv[0][0].weight
    assert torch.equal(layer, state["features.1.conv.0.0.weight"])


def test_spec_names_and_errors():
    assert detector_spec("fcos").name == "fcos_mobilenet_v2"
    assert detector_spec("RetinaNet_lite0").name == "retinanet_efficientnet_lite0"
    spec = detector_spec("ssdlite320_mobilenet_v3_large")
    assert (spec.arch, spec.backbone, spec.weights_kind) == ("ssdlite", None, "coco")
    assert detector_spec("fcos_resnet18", pretrained="none").weights_kind is None
    again = detector_spec(detector_spec("fcos", fpn_channels=64).to_dict())
    assert again.options == {"fpn_channels": 64}
    with pytest.raises(CnnkitError, match="unknown detector 'focs'.*did you mean"):
        detector_spec("focs")
    with pytest.raises(CnnkitError, match="unknown detection backbone 'resnet1'"):
        detector_spec("fcos_resnet1")
    with pytest.raises(CnnkitError, match="not one stack of convolutional layers"):
        detector_spec("fcos_vit_b_16")
    with pytest.raises(CnnkitError, match="needs one of torchvision's COCO detectors"):
        detector_spec("fcos_mobilenet_v2", pretrained="coco")
    with pytest.raises(CnnkitError, match="takes --pretrained coco"):
        detector_spec("fcos_resnet50_fpn", pretrained="imagenet")
    with pytest.raises(CnnkitError, match="has no option 'dropout'"):
        detector_spec("fcos", dropout=0.5)
    with pytest.raises(CnnkitError, match="fpn_channels must be a multiple of 32"):
        detector_spec("fcos", fpn_channels=100)
    with pytest.raises(CnnkitError, match="fpn_channels does not apply"):
        detector_spec("ssdlite", fpn_channels=64)
    names = [name for name, _ in list_detectors()]
    assert {"fcos_mobilenet_v2", "ssdlite_efficientnet_lite0", "fcos_resnet50_fpn"} <= set(names)


def test_freezing_and_learning_rates(empty_hub):
    model = build_detector("retinanet", NUM_CLASSES, image_size=SIZE)
    blocks = model.blocks()
    assert len(blocks) == 5  # strides 2, 4, 8, 16, 32
    assert model.trainable_blocks == DEFAULT_TRAINABLE_BLOCKS
    model.train()
    bns = [m for m in blocks[-1][-1].modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(bn.training for bn in bns)  # pretrained statistics stay
    assert model.model.head.training

    groups = model.param_groups(0.1, backbone_lr_ratio=0.1)
    assert [g["name"] for g in groups] == ["head", "block4", "block3", "block2"]
    assert [g["lr"] for g in groups] == pytest.approx([0.1, 0.01, 0.1 * 0.1**1.5, 0.001])
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert {id(p) for g in groups for p in g["params"]} == trainable

    model.freeze(0)
    assert [g["name"] for g in model.param_groups(0.1)] == ["head"]
    model.freeze("all")
    assert all(p.requires_grad for p in model.parameters())
    assert len(model.param_groups(0.1)) == 6
    with pytest.raises(CnnkitError, match="trainable blocks"):
        model.freeze(-1)


def test_rebuild_and_random_init():
    # A rebuild (no weights fetched) is in the state a pretrained run starts in...
    rebuilt = build_detector("fcos", NUM_CLASSES, image_size=SIZE, pretrained_backbone=False)
    assert rebuilt.trainable_blocks == DEFAULT_TRAINABLE_BLOCKS and rebuilt.backbone_bn_eval
    # ...and a detector without pretrained weights trains everything, BatchNorm included.
    plain = build_detector(detector_spec("fcos", pretrained=None), NUM_CLASSES, image_size=SIZE)
    plain.train()
    assert plain.trainable_blocks == "all" and not plain.backbone_bn_eval
    assert all(p.requires_grad for p in plain.parameters())
    assert all(m.training for m in plain.modules())


def test_postprocess_changes_take_effect(empty_hub):
    torch.manual_seed(0)
    model = build_detector("fcos", NUM_CLASSES, image_size=SIZE)
    model.eval()
    images, _ = _batch()
    with torch.no_grad():
        apply_postprocess(model, PostProcess(0.0, 0.5, 1000))
        many = model(images[:1])[0]
        apply_postprocess(model, PostProcess(0.0, 0.5, 5))
        few = model(images[:1])[0]
        apply_postprocess(model, PostProcess(0.0, 0.2, 1000))
        strict = model(images[:1])[0]
        top = float(many["scores"].max())
        apply_postprocess(model, PostProcess(top, 0.5, 100))
        none = model(images[:1])[0]
    assert len(many["boxes"]) > 5 and len(few["boxes"]) == 5
    assert torch.equal(few["boxes"], many["boxes"][:5])
    assert len(strict["boxes"]) < len(many["boxes"])
    assert len(none["boxes"]) == 0
    assert model.postprocess == PostProcess(top, 0.5, 100)
    assert "box_vote" not in model.record()["postprocess"]  # off: files older cnnkit reads
    assert model.record()["postprocess"]["score_threshold"] == top

    rcnn = build_detector("fasterrcnn", NUM_CLASSES, image_size=SIZE, pretrained_backbone=False)
    apply_postprocess(rcnn, PostProcess(0.3, 0.4, 7))
    heads = rcnn.model.roi_heads
    assert (heads.score_thresh, heads.nms_thresh, heads.detections_per_img) == (0.3, 0.4, 7)
    with pytest.raises(CnnkitError, match=r"--conf\) must be a number from 0 to 1"):
        PostProcess(score_threshold=1.5)
    assert PostProcess(score_threshold=0.0).score_threshold == 0.0
    with pytest.raises(CnnkitError, match=r"--iou\) must be a number above 0 and at most 1"):
        PostProcess(iou_threshold=0)  # said as refused, not "from 0"
    assert PostProcess.from_dict(PostProcess(0.2, 0.6, 10).to_dict()) == PostProcess(0.2, 0.6, 10)


def test_nms_on_known_boxes():
    boxes = torch.tensor(
        [[0, 0, 10, 10], [1, 0, 11, 10], [1, 0, 11, 10], [20, 20, 30, 30]], dtype=torch.float32
    )
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    labels = torch.tensor([0, 0, 1, 0])
    # Box 1 overlaps box 0 (IoU 90/110 = 0.82) in the same class; box 2 is the other class.
    assert nms(boxes, scores, labels, 0.5).tolist() == [0, 2, 3]
    assert nms(boxes, scores, labels, 0.85).tolist() == [0, 1, 2, 3]
    assert nms(boxes, scores, torch.zeros(4, dtype=torch.int64), 0.5).tolist() == [0, 3]
    kept = filter_detections(
        {"boxes": boxes, "scores": scores, "labels": labels}, PostProcess(0.65, 0.5, 1)
    )
    assert kept["scores"].tolist() == pytest.approx([0.9])
    assert len(nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.5)) == 0


def test_summary_runs_on_a_tensor_batch():
    model = build_detector("ssdlite_lite0", NUM_CLASSES, image_size=SIZE, pretrained_backbone=False)
    summary = summarize(model, (3, SIZE, SIZE))
    assert summary.total_params == sum(p.numel() for p in model.parameters())


# ---- weights the hub cache must hold ----


def test_coco_weights_offline_is_one_line(empty_hub):
    with pytest.raises(CnnkitError) as info:
        build_detector("fcos_resnet50_fpn", NUM_CLASSES, image_size=SIZE)
    message = str(info.value)
    assert "\n" not in message
    assert "fcos_resnet50_fpn_coco-99b0c9b7.pth" in message and str(empty_hub) in message
    with pytest.raises(CnnkitError, match="resnet18-f37072fd.pth"):
        build_detector("fcos_resnet18", NUM_CLASSES, image_size=SIZE)


def test_coco_weights_load_from_the_hub_cache(empty_hub):
    torch.manual_seed(1)
    coco = build_torchvision_detector("ssdlite320_mobilenet_v3_large", 91)
    saved = coco.state_dict()
    empty_hub.mkdir(parents=True)
    torch.save(saved, empty_hub / "ssdlite320_mobilenet_v3_large_coco-a79551df.pth")

    model = build_detector("ssdlite320_mobilenet_v3_large", NUM_CLASSES, image_size=SIZE)
    state = model.model.state_dict()
    fresh = set(class_head_keys(model.model, "ssdlite320_mobilenet_v3_large"))
    assert fresh and all(state[k].shape != saved[k].shape for k in fresh if k.endswith("weight"))
    assert all(torch.equal(state[k], saved[k]) for k in state if k not in fresh)
    assert model.trainable_blocks == DEFAULT_TRAINABLE_BLOCKS and len(model.blocks()) == 5

    images, targets = _batch()
    model.train()
    assert set(model(images, targets)) == LOSSES["ssdlite"]
    model.eval()
    apply_postprocess(model, KEEP_ALL)
    with torch.no_grad():
        labels = torch.cat([d["labels"] for d in model(images)])
    assert labels.min() >= 0 and labels.max() < NUM_CLASSES


def test_coco_file_from_frozen_batchnorm_and_a_file_that_does_not_fit(empty_hub, tmp_path):
    # torchvision's COCO files come from models with FrozenBatchNorm2d: no num_batches_tracked.
    torch.manual_seed(2)
    name = "fasterrcnn_mobilenet_v3_large_320_fpn"
    saved = {
        k: v
        for k, v in build_torchvision_detector(name, 91).state_dict().items()
        if not k.endswith("num_batches_tracked")
    }
    path = tmp_path / "coco.pth"
    torch.save(saved, path)
    model = build_detector(detector_spec(name, weights=str(path)), 3, image_size=SIZE)
    state = model.model.state_dict()
    assert torch.equal(
        state["backbone.body.3.block.0.0.weight"], saved["backbone.body.3.block.0.0.weight"]
    )
    assert model.model.roi_heads.box_predictor.cls_score.out_features == 4  # 3 + background

    wrong = packaged_mobilenet_v2_file()
    with pytest.raises(CnnkitError, match=f"weights file {wrong} does not fit {name}"):
        build_detector(detector_spec(name, weights=str(wrong)), 3, image_size=SIZE)


def test_torchvision_backbone_from_the_hub_cache(empty_hub):
    torch.manual_seed(3)
    saved = torchvision.models.mobilenet_v3_small().state_dict()
    empty_hub.mkdir(parents=True)
    torch.save(saved, empty_hub / "mobilenet_v3_small-047dcff4.pth")
    model = build_detector("fasterrcnn_mobilenet_v3_small", NUM_CLASSES, image_size=SIZE)
    body = model.model.backbone.body
    assert torch.equal(body.features_4.block[0][0].weight, saved["features.4.block.0.0.weight"])
    assert len(model.blocks()) == 5


def test_background_offset_and_crowd_boxes_in_training_targets():
    target = BoxTarget([[0, 0, 10, 10], [5, 5, 20, 20]], [0, 1], [False, True])
    for arch, offset in (("fcos", 0), ("retinanet", 0), ("ssdlite", 1), ("fasterrcnn", 1)):
        model = build_detector(arch, NUM_CLASSES, image_size=SIZE, pretrained_backbone=False)
        seen = model._model_target(target, torch.device("cpu"))
        assert seen["labels"].tolist() == [0 + offset]  # the crowd box is not trained on
        assert seen["boxes"].tolist() == [[0.0, 0.0, 10.0, 10.0]]
    rcnn = model.model
    assert rcnn.roi_heads.box_predictor.cls_score.out_features == NUM_CLASSES + 1


# ---- box voting ----


def test_box_voting_averages_the_candidates_of_each_kept_box_by_score():
    boxes = torch.tensor(
        [[0, 0, 10, 10], [0, 0, 12, 10], [40, 40, 50, 50], [0, 0, 11, 10], [0, 0, 30, 30]],
        dtype=torch.float32,
    )
    scores = torch.tensor([0.9, 0.6, 0.8, 0.3, 0.5])
    labels = torch.tensor([0, 0, 0, 1, 0])
    # NMS (IoU 0.5) keeps 0, 2, 4 (4 overlaps 0 by 100/900) and 3 (the other class). Box 1
    # overlaps box 0 by 100/120 = 0.83: it votes for box 0 at 0.8, not at 0.9; box 3 is
    # another class, so it never votes for box 0 although it overlaps it by 0.91.
    plain = filter_detections(
        {"boxes": boxes, "scores": scores, "labels": labels}, PostProcess(0.0, 0.5, 10)
    )
    voted = filter_detections(
        {"boxes": boxes, "scores": scores, "labels": labels}, PostProcess(0.0, 0.5, 10, 0.8)
    )
    strict = filter_detections(
        {"boxes": boxes, "scores": scores, "labels": labels}, PostProcess(0.0, 0.5, 10, 0.9)
    )
    assert plain["scores"].tolist() == pytest.approx([0.9, 0.8, 0.5, 0.3])
    assert torch.equal(voted["scores"], plain["scores"])  # voting moves boxes, not scores
    assert torch.equal(voted["labels"], plain["labels"])
    x2 = (0.9 * 10 + 0.6 * 12) / 1.5
    assert voted["boxes"][0].tolist() == pytest.approx([0, 0, x2, 10])
    assert torch.equal(voted["boxes"][1:], plain["boxes"][1:])  # nothing else overlaps them
    assert torch.equal(strict["boxes"], plain["boxes"])
    # a candidate under --conf still votes (down to VOTE_SCORE_THRESHOLD), so a prediction's
    # boxes are the ones evaluation scored
    confident = filter_detections(
        {"boxes": boxes, "scores": scores, "labels": labels}, PostProcess(0.7, 0.5, 10, 0.8)
    )
    assert confident["scores"].tolist() == pytest.approx([0.9, 0.8])
    assert confident["boxes"][0].tolist() == pytest.approx([0, 0, x2, 10])
    # a candidate under VOTE_SCORE_THRESHOLD votes for no box, at evaluation's threshold too,
    # so evaluate scores the boxes predict returns; a kept box that low still keeps itself
    faint = {
        "boxes": torch.cat([boxes, torch.tensor([[0, 0, 11, 10], [60, 60, 70, 70.0]])]),
        "scores": torch.cat([scores, torch.tensor([0.04, 0.02])]),
        "labels": torch.cat([labels, torch.tensor([0, 0])]),
    }
    evaluated = filter_detections(faint, PostProcess(0.001, 0.5, 10, 0.8))
    predicted = filter_detections(faint, PostProcess(0.7, 0.5, 10, 0.8))
    assert evaluated["boxes"][0].tolist() == predicted["boxes"][0].tolist()
    assert evaluated["boxes"][0].tolist() == pytest.approx([0, 0, x2, 10])
    assert evaluated["boxes"][-1].tolist() == pytest.approx([60, 60, 70, 70])  # kept at 0.02


def test_a_voting_detector_picks_from_its_heads_unsuppressed_candidates(empty_hub):
    torch.manual_seed(0)
    model = build_detector("fcos", NUM_CLASSES, image_size=SIZE)
    model.eval()
    images, _ = _batch()
    with torch.no_grad():
        apply_postprocess(model, PostProcess(0.01, 1.0, VOTE_CANDIDATES))
        candidates = model(images[:1])[0]
        apply_postprocess(model, PostProcess(0.01, 0.5, 20))
        plain = model(images[:1])[0]
        voting = PostProcess(0.01, 0.5, 20, 0.6)
        apply_postprocess(model, voting)
        heads = model.model
        assert (heads.nms_thresh, heads.detections_per_img) == (1.0, VOTE_CANDIDATES)
        voted = model(images[:1])[0]
    assert len(candidates["boxes"]) > len(plain["boxes"]) > 1
    expected = filter_detections(candidates, voting)
    assert torch.equal(voted["scores"], plain["scores"]) and torch.equal(
        voted["scores"], expected["scores"]
    )
    assert torch.allclose(voted["boxes"], expected["boxes"])
    assert model.record()["postprocess"]["box_vote"] == 0.6
    with pytest.raises(TypeError, match="DetectionModel"):
        apply_postprocess(model.model, voting)  # a bare torchvision model cannot vote
    with pytest.raises(CnnkitError, match=r"--box-vote\) must be a number from 0 to 1"):
        PostProcess(box_vote=1.5)
    assert PostProcess.from_dict({"score_threshold": 0.2}).box_vote == 0.0  # older checkpoints
