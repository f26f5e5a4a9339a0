"""Explanations as a user gets them: the CAM's layer found on every kind of model, maps at the
image's own size, the two sanity checks (random weights change the map; deleting the pixels it
ranks highest costs the class more than deleting random ones), filters, feature maps, and the
CLI's one-line refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter
from skimage import data as photos

import cnnkit
from cnnkit.cli import main
from cnnkit.data.preprocess import Preprocessing
from cnnkit.explain import explain, find_target_layer
from cnnkit.explain.cam import to_image_pixels
from cnnkit.export import export_model
from cnnkit.models import create_model, resolve_spec
from cnnkit.tasks.classify.predictor import Classifier

SAMPLE = Path(cnnkit.__file__).parent / "data" / "samples" / "cifar10-sample" / "test"
# model -> the layer "auto" must find (None: any spatial layer will do)
ARCHITECTURES = {
    "simple_cnn": "relu_3",  # before the last max-pooling: the finer map
    "fastnet_cpu": None,
    "conv2d:8:3,relu,maxpool2d,conv2d:16:3,relu,flatten,dense": "relu_2",
    "resnet18": "layer4",
    "mobilenet_v2": "features",
    "vgg11": "features",
    "densenet121": None,
    "efficientnet_b0": "features",
    "regnet_x_400mf": "trunk_output",
    "convnext_tiny": "features",
    "timm:resnet18": "layer4",
    "efficientnet_lite0": "bn2",
}


def classifier(model: str, size: int = 64, **options) -> Classifier:
    spec = resolve_spec(model, **options)
    net = create_model(spec, 10, (3, size, size))
    prep = Preprocessing(size=(size, size), resize="stretch")
    return Classifier(net, [f"c{i}" for i in range(10)], prep, "cpu", "fp32", spec)


@pytest.mark.parametrize("model", list(ARCHITECTURES))
def test_the_cams_layer_is_found_on_every_kind_of_model(model, tmp_path):
    torch.manual_seed(0)
    clf = classifier(model)
    name, _ = find_target_layer(clf.model, (3, 64, 64))
    if ARCHITECTURES[model] is not None:
        assert name == ARCHITECTURES[model]
    image = np.asarray(Image.open(sorted(SAMPLE.rglob("*.png"))[0]).resize((80, 50)))
    (result,) = explain(clf, [image], "eigencam", out_dir=tmp_path)
    assert result.heatmap.shape == (50, 80) and result.layer == name
    assert np.isfinite(result.heatmap).all() and 0 <= result.heatmap.min() <= 1
    assert Image.open(result.file).size == (80, 50)


def test_a_transfer_models_map_reads_its_backbone():
    clf = classifier("efficientnet_lite0", pretrained="imagenet", transfer=True)
    name, _ = find_target_layer(clf.model, (3, 64, 64))
    assert name.startswith("backbone")


@pytest.fixture(scope="module")
def imagenet() -> Classifier:
    return Classifier.from_pretrained("efficientnet_lite0", device="cpu", precision="fp32")


def real_photos() -> dict[str, np.ndarray]:
    names = ("chelsea", "coffee", "rocket", "astronaut")
    return {name: getattr(photos, name)() for name in names}


def test_a_centre_crop_leaves_the_unseen_border_out_of_the_map(imagenet):
    (result,) = explain(imagenet, [photos.chelsea()])
    assert result.heatmap.shape == photos.chelsea().shape[:2]
    seen = ~np.isnan(result.heatmap)
    # 224 of 256 (crop_pct 0.875) of the shorter side (300 px) is seen: 262 rows
    assert seen[:, 225].sum() == round(300 * 0.875) and not seen[0, 0]
    assert (
        result.predicted in ("tabby", "tiger cat", "Egyptian cat")
        and result.label == result.predicted
    )


def test_the_map_changes_when_the_weights_are_randomised(imagenet):
    image = photos.chelsea()
    (trained,) = explain(imagenet, [image])
    random_net = Classifier.from_pretrained("efficientnet_lite0", device="cpu", precision="fp32")
    torch.manual_seed(0)
    for module in random_net.model.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            module.reset_parameters()
    (randomised,) = explain(random_net, [image], target=trained.label)
    seen = ~np.isnan(trained.heatmap)
    a, b = trained.heatmap[seen], randomised.heatmap[seen]
    assert a.std() > 0.1  # the trained network's map has a shape
    # the random network's is flat (Grad-CAM's ReLU leaves nothing) or unlike the trained one's
    assert b.std() < 1e-6 or np.corrcoef(a, b)[0, 1] < 0.5


def test_deleting_the_pixels_the_map_ranks_highest_costs_the_class_most(imagenet):
    """The deletion check on a 12 x 12 grid of the pixels the model sees: blurring the quarter
    of the cells the map ranks highest lowers the class's probability more than blurring a
    random quarter (three draws), on average and on most photos."""
    rng = np.random.default_rng(0)
    cam_drops, random_drops = [], []
    for image in real_photos().values():
        (result,) = explain(imagenet, [image])
        blurred = np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(12)))
        rows = np.flatnonzero(~np.isnan(result.heatmap).all(1))
        cols = np.flatnonzero(~np.isnan(result.heatmap).all(0))
        ys = np.linspace(rows[0], rows[-1] + 1, 13).astype(int)
        xs = np.linspace(cols[0], cols[-1] + 1, 13).astype(int)
        cells = [(ys[i], ys[i + 1], xs[j], xs[j + 1]) for i in range(12) for j in range(12)]
        scores = np.array([np.nanmean(result.heatmap[a:b, c:d]) for a, b, c, d in cells])
        k = len(cells) // 4

        def probability(chosen, image=image, blurred=blurred, cells=cells, label=result.label):
            edited = image.copy()
            for i in chosen:
                a, b, c, d = cells[i]
                edited[a:b, c:d] = blurred[a:b, c:d]
            return dict(imagenet.predict(edited, top_k=1000).top_k)[label]

        cam_drops.append(result.probability - probability(np.argsort(scores)[::-1][:k]))
        draws = [rng.choice(len(cells), k, replace=False) for _ in range(3)]
        random_drops.append(np.mean([result.probability - probability(d) for d in draws]))
    wins = sum(c > r for c, r in zip(cam_drops, random_drops, strict=True))
    assert np.mean(cam_drops) > np.mean(random_drops) + 0.1, (cam_drops, random_drops)
    assert wins >= 3, (cam_drops, random_drops)


def test_to_image_pixels_undoes_a_letterbox():
    prep = Preprocessing(size=(64, 64), resize="pad")
    cam = np.zeros((64, 64), np.float32)
    cam[16:48, :] = 1.0  # a 2:1 image letterboxed: rows 16-47 hold it
    out = to_image_pixels(cam, 50, 100, prep)
    assert out.shape == (50, 100) and out.min() > 0.99


def test_cli_explain_filters_and_features(cls_run, tmp_path, capsys):
    image = str(sorted(SAMPLE.rglob("*.png"))[0])
    out = tmp_path / "cams"
    argv = ["explain", str(cls_run.run_dir), image, "--out", str(out), "--json", "--class", "dog"]
    assert main([*argv, "--method", "gradcam++"]) == 0
    (printed,) = json.loads(capsys.readouterr().out)
    assert printed["label"] == "dog" and printed["layer"] == "relu_3"
    assert Image.open(printed["file"]).size == Image.open(image).size
    filters = tmp_path / "filters.png"
    assert main(["filters", str(cls_run.run_dir), "--out", str(filters)]) == 0
    grid = np.asarray(Image.open(filters))
    assert grid.ndim == 3 and grid.shape[0] > 100  # 32 filters of 3x3, enlarged
    features = tmp_path / "features.png"
    argv = ["features", str(cls_run.run_dir), image, "--layer", "conv2d_1", "--out", str(features)]
    assert main(argv) == 0
    assert "conv2d_1" in capsys.readouterr().out and features.is_file()


def test_explain_skips_and_names_unreadable_files_among_good_ones(cls_run, tmp_path, capsys):
    folder = tmp_path / "mix"
    folder.mkdir()
    good = sorted(SAMPLE.rglob("*.png"))[:2]
    for i, path in enumerate(good):
        (folder / f"b{i}.png").write_bytes(path.read_bytes())
    (folder / "a_bad.png").write_text("not a picture")  # sorts first
    out = tmp_path / "cams"
    assert main(["explain", str(cls_run.run_dir), str(folder), "--out", str(out), "--json"]) == 0
    captured = capsys.readouterr()
    assert [Path(r["source"]).name for r in json.loads(captured.out)] == ["b0.png", "b1.png"]
    assert f"skipped {folder / 'a_bad.png'}: not an image" in captured.err
    assert len(list(out.glob("*.png"))) == 2
    assert main(["explain", str(cls_run.run_dir), str(folder / "a_bad.png")]) == 2
    err = capsys.readouterr().err.strip()  # one file: one line naming it
    assert err == f"cnnkit: error: {folder / 'a_bad.png'}: not an image"
    argv = [
        "features",
        str(cls_run.run_dir),
        str(folder / "a_bad.png"),
        "--out",
        str(out / "f.png"),
    ]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == f"cnnkit: error: {folder / 'a_bad.png'}: not an image"


def test_cli_refusals_are_one_line(cls_run, tmp_path, capsys):
    image = str(sorted(SAMPLE.rglob("*.png"))[0])
    onnx_file = export_model(cls_run.run_dir, "onnx", tmp_path / "m.onnx").path
    cases = [
        (["explain", str(cls_run.run_dir), image, "--layer", "nope"], "unknown layer 'nope'"),
        (["explain", str(cls_run.run_dir), image, "--class", "dgo"], "did you mean 'dog'"),
        (["explain", str(onnx_file), image], "not an exported file"),
        (["explain", str(cls_run.run_dir)], "at least one image"),
        (["filters"], "give a checkpoint"),
        (["features", str(cls_run.run_dir), image, image], "give one image"),
    ]
    for argv, message in cases:
        assert main(argv) != 0
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (argv, err)
