"""`cnnkit explain` for detectors and segmenters, as a user gets it: a tiny FCOS and a tiny
LR-ASPP trained for one epoch on eight Penn-Fudan photos, explained through the CLI and the
Python API: overlays at each photo's size, boxes / mask outlines, maps that are not flat, the
randomised-weights sanity check, and the one-line refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cnnkit
from cnnkit.cli import main
from cnnkit.errors import CnnkitError
from cnnkit.explain import DetectionExplanation, SegmentationExplanation, explain
from cnnkit.explain.segmentation import OUTLINE, outline
from detect_files import shared_dataset

pytestmark = pytest.mark.shared_data
PHOTOS = 8


@pytest.fixture(scope="module")
def pennfudan(tmp_path_factory) -> Path:
    """The first eight Penn-Fudan photos and their instance masks, in Penn-Fudan's layout."""
    source = shared_dataset("pennfudan")
    root = tmp_path_factory.mktemp("pennfudan")
    (root / "PNGImages").mkdir()
    (root / "PedMasks").mkdir()
    for photo in sorted((source / "PNGImages").glob("*.png"))[:PHOTOS]:
        shutil.copy(photo, root / "PNGImages" / photo.name)
        mask = f"{photo.stem}_mask.png"
        shutil.copy(source / "PedMasks" / mask, root / "PedMasks" / mask)
    return root


def train(data: Path, project: Path, model: str, size: int) -> Path:
    run = cnnkit.train(
        data=str(data),
        model=model,
        epochs=1,
        batch_size=4,
        image_size=size,
        val_split=0.25,
        optimizer="sgd",
        lr=0.01,
        precision="fp32",
        report=False,
        progress=False,
        project=str(project),
        name=model,
    )
    return run.run_dir


@pytest.fixture(scope="module")
def runs(pennfudan, tmp_path_factory) -> dict[str, Path]:
    project = tmp_path_factory.mktemp("runs")
    return {
        "detect": train(pennfudan, project, "fcos_mobilenet_v2", 128),
        "segment": train(pennfudan, project, "lraspp", 96),
    }


def photos(pennfudan: Path, n: int = 2) -> list[str]:
    return [str(p) for p in sorted((pennfudan / "PNGImages").glob("*.png"))[:n]]


def randomise(predictor) -> None:
    torch.manual_seed(0)
    for module in predictor.model.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            module.reset_parameters()


def test_cli_explains_a_detectors_boxes_over_each_photo(runs, pennfudan, tmp_path, capsys):
    images = photos(pennfudan)
    out = tmp_path / "cams"
    argv = ["explain", str(runs["detect"]), *images, "--out", str(out), "--conf", "0.5"]
    assert main([*argv, "--json", "--class", "person"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [p["source"] for p in printed] == images
    for item, image in zip(printed, images, strict=True):
        assert item["layer"] == "model.backbone.body.features_18"  # MobileNetV2's last stage
        assert item["label"] == "person" and item["conf"] == 0.5 and item["boxes"]
        assert all(b["score"] >= 0.5 and b["label"] == "person" for b in item["boxes"])
        assert Path(item["file"]).name.endswith("_gradcam.png")
        assert Image.open(item["file"]).size == Image.open(image).size
    assert main([*argv, "--method", "eigencam"]) == 0
    captured = capsys.readouterr()
    assert "boxes (person" in captured.out and "eigencam on layer" in captured.err
    assert len(list(out.glob("*_eigencam.png"))) == 2


def test_a_photo_without_boxes_is_one_line_and_no_overlay(runs, pennfudan, tmp_path, capsys):
    (image,) = photos(pennfudan, 1)
    argv = ["explain", str(runs["detect"]), image, "--out", str(tmp_path), "--conf", "0.9999"]
    assert main(argv) == 0
    assert "no box scoring >= 1.00: no overlay written" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []


def test_the_python_api_gives_a_detectors_map_at_the_photos_size(runs, pennfudan, tmp_path):
    detector = cnnkit.load(runs["detect"])
    (image,) = photos(pennfudan, 1)
    (result,) = explain(detector, [image], "gradcam++", conf=0.5, out_dir=tmp_path)
    assert isinstance(result, DetectionExplanation)
    height, width = result.image.shape[:2]
    assert result.heatmap.shape == (height, width) and np.isfinite(result.heatmap).all()
    assert result.heatmap.min() >= 0 and result.heatmap.max() <= 1
    assert result.heatmap.std() > 0.05  # not flat
    for box in result.boxes:  # in the photo's own pixels
        x1, y1, x2, y2 = box.box
        assert 0 <= x1 <= x2 <= width and 0 <= y1 <= y2 <= height
    # a finer map from the feature pyramid's stride-8 output, named by hand
    (fpn,) = explain(detector, [image], layer="model.backbone.fpn.layer_blocks.0", conf=0.5)
    assert fpn.layer == "model.backbone.fpn.layer_blocks.0" and fpn.heatmap.std() > 0.05


def test_a_detectors_map_changes_when_its_weights_are_randomised(runs, pennfudan):
    (image,) = photos(pennfudan, 1)
    detector = cnnkit.load(runs["detect"])
    (trained,) = explain(detector, [image], conf=0.5)
    randomise(detector)
    (randomised,) = explain(detector, [image], conf=0.5)
    a = trained.heatmap.ravel()
    assert a.std() > 0.05
    assert (
        randomised.heatmap is None
        or randomised.heatmap.std() < 1e-6
        or (np.corrcoef(a, randomised.heatmap.ravel())[0, 1] < 0.5)
    )


def test_cli_explains_a_segmenters_class_with_its_outline(runs, pennfudan, tmp_path, capsys):
    (image,) = photos(pennfudan, 1)
    out = tmp_path / "cams"
    argv = ["explain", str(runs["segment"]), image, "--out", str(out), "--method", "gradcam++"]
    assert main([*argv, "--json"]) == 0
    (item,) = json.loads(capsys.readouterr().out)
    assert item["label"] == "person" and 0 < item["share"] < 1  # the default: not background
    assert item["layer"] == "net.body.features_18"
    drawn = np.asarray(Image.open(item["file"]))
    assert drawn.shape[1::-1] == Image.open(image).size
    # explain runs the network in fp32 (for its gradients): predict's mask at fp32 is its mask
    segmenter = cnnkit.load(runs["segment"], precision="fp32")
    (result,) = explain(segmenter, [image], "gradcam++", target="person")
    assert isinstance(result, SegmentationExplanation)
    np.testing.assert_array_equal(result.mask, np.asarray(segmenter.predict(image)) == 1)
    assert (drawn[outline(result.mask, 1)] == OUTLINE).all()
    assert result.heatmap.shape == result.mask.shape and result.heatmap.std() > 0.05
    assert main(["explain", str(runs["segment"]), image, "--out", str(out)]) == 0
    assert "person on" in capsys.readouterr().out  # the plain line, Grad-CAM by default


def test_a_segmenters_map_changes_when_its_weights_are_randomised(runs, pennfudan):
    (image,) = photos(pennfudan, 1)
    segmenter = cnnkit.load(runs["segment"])
    (trained,) = explain(segmenter, [image], "gradcam++", target="person")
    randomise(segmenter)
    (randomised,) = explain(segmenter, [image], "gradcam++", target="person")
    a = trained.heatmap.ravel()
    assert a.std() > 0.05
    assert (
        randomised.heatmap is None
        or randomised.heatmap.std() < 1e-6
        or (np.corrcoef(a, randomised.heatmap.ravel())[0, 1] < 0.5)
    )


@pytest.mark.parametrize("task", ["detect", "segment"])
def test_bad_input_is_one_line(runs, pennfudan, tmp_path, capsys, task):
    (image,) = photos(pennfudan, 1)
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("not pixels")
    run = str(runs[task])
    cases = [
        ([run, str(not_an_image)], "notes.png"),
        ([run, image, "--class", "persn"], "did you mean 'person'"),
        ([run, image, "--layer", "nope"], "unknown layer 'nope'"),
    ]
    if task == "detect":
        cases += [
            ([run, image, "--layer", "model.backbone.fpn"], "no single feature map"),
            ([run, image, "--layer", "model.head.classification_head.conv"], "runs 5 times"),
        ]
    else:
        cases += [([run, image, "--conf", "0.5"], "--conf is for detectors")]
    for argv, message in cases:
        assert main(["explain", *argv, "--out", str(tmp_path / "out")]) != 0
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, (
            argv,
            err,
        )


def test_the_python_api_refuses_a_class_the_run_does_not_have(runs, pennfudan):
    with pytest.raises(CnnkitError, match="unknown class 'car'"):
        explain(cnnkit.load(runs["segment"]), photos(pennfudan, 1), target="car")
