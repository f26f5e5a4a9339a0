"""Detection through the engine, as a user runs it: train -> evaluate -> predict on a tiny set
of images the test draws, exact resume, and the task's refusals."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cnnkit
from cnnkit.cli import main
from cnnkit.config import TrainConfig
from cnnkit.engine.fit import Trainer
from cnnkit.errors import CnnkitError
from cnnkit.tasks.detect.predictor import Detector
from cnnkit.tasks.detect.tta import mirror_boxes
from stop_after import StopAfter

MODEL = "fcos_mobilenet_v2"


def write_masks_dataset(root: Path, n: int = 8, seed: int = 0) -> Path:
    """root/images/*.png + root/masks/*_mask.png: noise photos of 120 x 96 px, each with one or
    two solid rectangles, one instance id each (the Penn-Fudan layout's shape)."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        photo = rng.integers(0, 120, (96, 120, 3), dtype=np.uint8)
        mask = np.zeros((96, 120), np.uint8)
        for obj in range(1 + i % 2):
            x1, y1 = int(rng.integers(0, 70)), int(rng.integers(0, 50))
            w, h = int(rng.integers(20, 45)), int(rng.integers(20, 40))
            photo[y1 : y1 + h, x1 : x1 + w] = (230, 40 + 100 * obj, 40)
            mask[y1 : y1 + h, x1 : x1 + w] = obj + 1
        Image.fromarray(photo).save(root / "images" / f"p{i}.png")
        Image.fromarray(mask).save(root / "masks" / f"p{i}_mask.png")
    (root / "classes.txt").write_text("box\n")
    return root


@pytest.fixture(scope="module")
def boxes_data(tmp_path_factory) -> Path:
    return write_masks_dataset(tmp_path_factory.mktemp("boxes") / "data")


def detect_options(data: Path, **extra):
    options = dict(
        data=str(data),
        model=MODEL,
        epochs=2,
        batch_size=4,
        image_size=96,
        val_split=0.25,
        optimizer="sgd",
        lr=0.01,
        augment="standard",
        precision="fp32",
        report=False,  # report.html has its own tests (test_report.py)
    )
    options.update(extra)
    return options


@pytest.fixture(scope="module")
def detect_run(boxes_data, tmp_path_factory):
    project = tmp_path_factory.mktemp("runs")
    return cnnkit.train(
        project=str(project), name="det", progress=False, **detect_options(boxes_data)
    )


def test_a_detector_trains_into_a_run_folder_with_its_loss_items_and_map(detect_run):
    history = detect_run.history
    assert [row["epoch"] for row in history] == [1, 2]
    for key in ("train_loss", "train_classification", "train_bbox_regression", "val_map"):
        assert all(np.isfinite(row[key]) for row in history), key
    row = history[0]
    parts = row["train_classification"] + row["train_bbox_regression"] + row["train_bbox_ctrness"]
    assert row["train_loss"] == pytest.approx(parts, rel=1e-5)  # the total is their sum
    header = (detect_run.run_dir / "history.csv").read_text().splitlines()[0].split(",")
    assert {"train_bbox_regression", "val_map", "val_map_50", "val_map_75"} <= set(header)
    metrics = json.loads((detect_run.run_dir / "metrics.json").read_text())
    assert metrics["task"] == "detect" and metrics["best_by"] == "val_map"
    ckpt = torch.load(detect_run.best, weights_only=True)
    assert ckpt["task"] == "detect" and ckpt["classes"] == ["box"]
    assert ckpt["postprocess"]["score_threshold"] == 0.25
    assert (detect_run.run_dir / "curves.png").is_file()


def test_box_loss_weights_the_box_regression_in_the_total(boxes_data, tmp_path):
    options = detect_options(boxes_data, epochs=1, box_loss=2.5)
    run = cnnkit.train(project=str(tmp_path), name="w", progress=False, **options)
    row = run.history[0]
    parts = row["train_classification"] + 2.5 * row["train_bbox_regression"]
    assert row["train_loss"] == pytest.approx(parts + row["train_bbox_ctrness"], rel=1e-5)
    for bad in (0, -1, "2", True):
        with pytest.raises(CnnkitError, match="box_loss must be a number above 0"):
            cnnkit.train(
                project=str(tmp_path), progress=False, **detect_options(boxes_data, box_loss=bad)
            )
    with pytest.raises(CnnkitError, match="--box-loss is for detectors"):
        cnnkit.train(data="cifar10-sample", box_loss=2, project=str(tmp_path), progress=False)


def test_evaluate_on_the_runs_own_data_gives_its_validation_map(detect_run, boxes_data):
    """`cnnkit evaluate` splits the run's data as the run did and scores best.pt the same way
    validation did: the same mAP as history.csv's best epoch."""
    detector = cnnkit.load(detect_run.run_dir)
    assert isinstance(detector, Detector)
    report = detector.evaluate(str(boxes_data), split="val", progress=False)
    best = detect_run.history[detect_run.metrics["best_epoch"] - 1]
    assert report.map == pytest.approx(best["val_map"], abs=1e-6)
    assert report.images == 2  # 8 images, val_split 0.25
    written = json.loads((report.out_dir / "metrics.json").read_text())
    assert {"map", "map_50", "map_75", "per_class"} <= set(written)
    for name in ("per_class.csv", "pr_curves.png", "gallery.png"):
        assert (report.out_dir / name).is_file(), name


def test_predictions_come_back_in_the_original_images_pixels(detect_run, boxes_data, tmp_path):
    detector = cnnkit.load(detect_run.best)
    image = Image.open(boxes_data / "images" / "p0.png")
    big = image.resize((240, 192), Image.Resampling.NEAREST)  # 2x: boxes must scale with it
    big.save(tmp_path / "big.png")
    files = [str(boxes_data / "images" / "p0.png"), str(tmp_path / "big.png")]
    small, large = detector.predict(files, conf=0.0)
    assert (small.width, small.height, large.width, large.height) == (120, 96, 240, 192)
    assert small.detections and large.detections
    for result in (small, large):
        for d in result.detections:
            x1, y1, x2, y2 = d.box
            assert 0 <= x1 <= x2 <= result.width and 0 <= y1 <= y2 <= result.height
            assert d.label == "box" and 0 <= d.score <= 1
    # 2x and 4x copies both shrink to the same model input: the same boxes, in each one's pixels
    image.resize((480, 384), Image.Resampling.NEAREST).save(tmp_path / "bigger.png")
    twice, four_times = detector.predict([files[1], str(tmp_path / "bigger.png")], conf=0.0)
    assert twice.detections and four_times.detections
    top_twice = torch.tensor(twice.detections[0].box)
    top_four = torch.tensor(four_times.detections[0].box)
    assert torch.allclose(top_four, 2 * top_twice, atol=4.0)  # the same object, scaled
    confident = detector.predict(np.asarray(image), conf=0.5).detections
    assert all(d.score >= 0.5 for d in confident) and len(confident) < len(small.detections)


def test_predict_cli_json_and_saved_images(detect_run, boxes_data, tmp_path, capsys):
    images = [str(p) for p in sorted((boxes_data / "images").glob("*.png"))[:2]]
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    out = tmp_path / "drawn"
    args = ["predict", str(detect_run.run_dir), *images, str(bad), "--json", "--conf", "0.01"]
    assert main([*args, "--save-images", str(out)]) == 0
    captured = capsys.readouterr()
    printed = captured.out[: captured.out.rindex("]") + 1]
    results = json.loads(printed)
    assert [r["source"] for r in results] == images
    assert all(set(d) == {"label", "score", "box"} for r in results for d in r["detections"])
    assert "skipped" in captured.err and "bad.png" in captured.err
    assert len(list(out.glob("*.png"))) == 2
    taken = tmp_path / "taken"
    taken.write_text("a file")
    assert main([*args, "--save-images", str(taken)]) == 2  # refused before predicting
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.splitlines()) == 1
    assert f"{taken} is a file, not a folder to write images into" in captured.err


def test_predict_csv_gives_every_image_a_row_even_without_detections(
    detect_run, boxes_data, capsys
):
    images = [str(p) for p in sorted((boxes_data / "images").glob("*.png"))[:2]]
    args = ["predict", str(detect_run.run_dir), *images, "--csv"]
    assert main([*args, "--conf", "1.0"]) == 0  # no score reaches 1: nothing found anywhere
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0] == ["source", "label", "score", "x1", "y1", "x2", "y2"]
    assert rows[1:] == [[image, "", "", "", "", "", ""] for image in images]
    assert main([*args, "--conf", "0.01"]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))[1:]
    found = cnnkit.load(detect_run.run_dir).predict(images, conf=0.01)
    expected = sum(max(1, len(r.detections)) for r in found)
    assert len(rows) == expected and {r[0] for r in rows} == set(images)


def test_an_interrupted_detection_run_resumes_to_the_same_weights(boxes_data, tmp_path):
    options = detect_options(boxes_data, epochs=2, project=str(tmp_path), seed=1)
    full = cnnkit.train(name="full", progress=False, **options)
    (tmp_path / "cut").mkdir()
    trainer = Trainer(TrainConfig(name="cut", **options), tmp_path / "cut", progress=False)
    trainer.stop = StopAfter(trainer.steps + 1)  # mid-way through epoch 2
    assert trainer.fit().interrupted
    cut = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    assert cut["epoch"] == 1 and cut["progress"]["step"] == 1
    resumed = cnnkit.train(resume=tmp_path / "cut", progress=False)
    a = torch.load(full.last, weights_only=True)["state_dict"]
    b = torch.load(resumed.last, weights_only=True)["state_dict"]
    for key, value in a.items():
        assert torch.equal(value, b[key]), key


def test_classification_options_a_detector_cannot_use_are_refused(boxes_data, tmp_path):
    for extra in ({"mixup": 0.2}, {"label_smoothing": 0.1}, {"tta": "flip"}, {"augment": "strong"}):
        with pytest.raises(CnnkitError):
            cnnkit.train(
                project=str(tmp_path), progress=False, **detect_options(boxes_data, **extra)
            )
    assert not any(tmp_path.iterdir())  # a run that never started leaves no folder


def test_coco128_yolo_files_train_end_to_end_with_every_name(tmp_path):
    """The real Ultralytics layout with COCO's 80 classes: one short epoch trains, validates
    and writes a checkpoint that names every class."""
    from detect_files import shared_dataset

    data = shared_dataset("coco128")
    run = cnnkit.train(
        data=str(data / "data.yaml"),
        model=MODEL,
        epochs=1,
        batch_size=16,
        image_size=128,
        val_split=0.1,
        optimizer="sgd",
        lr=0.01,
        precision="fp32",
        project=str(tmp_path),
        name="coco128",
        progress=False,
    )
    names = yaml_names(data / "data.yaml")
    ckpt = torch.load(run.best, weights_only=True)
    assert ckpt["classes"] == names and len(names) == 80
    assert np.isfinite(run.history[0]["train_loss"]) and run.history[0]["val_map"] is not None
    assert run.metrics["validation"] == "split"  # its val repeats train: a seeded split instead


def yaml_names(path: Path) -> list[str]:
    import yaml

    names = yaml.safe_load(path.read_text())["names"]
    return [names[i] for i in sorted(names)] if isinstance(names, dict) else list(names)


def test_pretrained_none_trains_a_detector_from_random_weights_with_a_narrow_pyramid(
    boxes_data, tmp_path
):
    from cnnkit.tasks.detect.backbones import mobilenet_v2_weights_file

    options = detect_options(
        boxes_data,
        epochs=1,
        pretrained="none",
        fpn_channels=64,
        nms_iou=0.7,
        box_vote=0.6,
        project=str(tmp_path),
    )
    (tmp_path / "scratch").mkdir()
    trainer = Trainer(TrainConfig(name="scratch", **options), tmp_path / "scratch", progress=False)
    run = trainer.fit()
    model = trainer.model
    imagenet = torch.load(mobilenet_v2_weights_file(), weights_only=True)["features.0.0.weight"]
    first = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert first.weight.shape == imagenet.shape and not torch.allclose(first.weight, imagenet)
    assert all(p.requires_grad for p in model.parameters())  # nothing frozen from scratch
    assert model.model.backbone.out_channels == 64
    ckpt = torch.load(run.best, weights_only=True)
    assert ckpt["model"]["options"] == {"pretrained": "none", "fpn_channels": 64}
    # --nms-iou and --box-vote are what best.pt predicts with
    assert (ckpt["postprocess"]["iou_threshold"], ckpt["postprocess"]["box_vote"]) == (0.7, 0.6)
    detector = cnnkit.load(run.best)
    assert (detector.postprocess.iou_threshold, detector.postprocess.box_vote) == (0.7, 0.6)
    found = detector.predict(str(boxes_data / "images" / "p0.png"))
    assert found.width > 0  # rebuilt from the checkpoint alone


def test_fpn_channels_is_refused_for_a_classifier(tmp_path):
    with pytest.raises(CnnkitError, match="fpn-channels is for detectors"):
        cnnkit.train(
            data="cifar10-sample", fpn_channels=64, epochs=1, project=str(tmp_path), progress=False
        )


def test_tuples_and_tensors_are_images_and_a_file_is_no_out_folder(
    detect_run, boxes_data, tmp_path, capsys
):
    detector = cnnkit.load(detect_run.run_dir)
    path = str(boxes_data / "images" / "p1.png")
    pixels = np.array(Image.open(path).convert("RGB"))
    by_path, by_tensor = detector.predict(
        (path, torch.from_numpy(pixels).permute(2, 0, 1)), conf=0.05
    )
    assert by_tensor.detections == by_path.detections and by_tensor.source.startswith("<tensor 3x")
    taken = tmp_path / "taken"
    taken.write_text("a file")
    assert main(["evaluate", str(detect_run.run_dir), "--out", str(taken)]) == 2
    err = capsys.readouterr().err
    assert (
        err == f"cnnkit: error: {taken} is a file, not a folder to write evaluation reports into\n"
    )


def test_box_vote_moves_boxes_for_one_call_and_is_refused_where_it_means_nothing(
    detect_run, boxes_data, tmp_path, capsys
):
    detector = cnnkit.load(detect_run.run_dir)
    image = str(boxes_data / "images" / "p1.png")
    assert detector.postprocess.box_vote == 0.0  # off unless asked for
    plain = detector.predict(image, conf=0.05).detections
    voted = detector.predict(image, conf=0.05, box_vote=0.5).detections
    assert detector.predict(image, conf=0.05).detections == plain  # for that call only
    assert [d.score for d in voted] == [d.score for d in plain]  # boxes move, scores stay
    assert any(v.box != p.box for v, p in zip(voted, plain, strict=True))
    argv = ["predict", str(detect_run.run_dir), image, "--json", "--conf", "0.05"]
    assert main([*argv, "--box-vote", "0.5"]) == 0
    printed = json.loads(capsys.readouterr().out)[0]["detections"]
    assert [d["box"] for d in printed] == [d.box for d in voted]
    assert main([*argv, "--box-vote", "1.5"]) == 2
    err = capsys.readouterr().err
    assert "box voting IoU (--box-vote) must be a number from 0 to 1" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    for bad, message in (
        ({"nms_iou": 0}, "nms_iou must be a number above 0 and at most 1"),
        ({"box_vote": 2}, "box_vote must be a number from 0 to 1"),
        ({"box_vote": True}, "box_vote must be a number from 0 to 1"),
    ):
        with pytest.raises(CnnkitError, match=message):
            TrainConfig(**bad)
    with pytest.raises(CnnkitError, match="box-vote is for detectors"):
        cnnkit.train(
            data="cifar10-sample", box_vote=0.7, epochs=1, project=str(tmp_path), progress=False
        )
    # evaluate scores at other post-processing as the Python API does
    out = ["--out", str(tmp_path / "eval"), "--json", "--no-progress"]
    assert (
        main(["evaluate", str(detect_run.run_dir), "--iou", "0.6", "--box-vote", "0.5", *out]) == 0
    )
    scored = json.loads(capsys.readouterr().out)
    detector.set_postprocess(iou=0.6, box_vote=0.5)
    report = detector.evaluate(str(boxes_data), out_dir=tmp_path / "eval2", progress=False)
    assert scored["map"] == pytest.approx(report.map) and scored["map_75"] == pytest.approx(
        report.map_75
    )
    assert scored["postprocess"] == {"iou_threshold": 0.6, "box_vote": 0.5}
    # without --out, other settings get their own folder beside the checkpoint
    assert main(["evaluate", str(detect_run.run_dir), "--box-vote", "0.5", "--no-progress"]) == 0
    capsys.readouterr()
    assert (detect_run.run_dir / "eval-data-val-iou0.5-vote0.5" / "metrics.json").is_file()


def test_the_gallery_draws_the_predictions_predict_would_show(detect_run, boxes_data, tmp_path):
    """gallery.png draws predictions over the detector's score threshold (--conf), not a fixed
    one: at 0 every ranked box is drawn in the prediction colour, at 1 none is."""
    from cnnkit.tasks.detect.draw import PREDICTED

    def predicted_pixels(conf: float) -> int:
        detector = cnnkit.load(detect_run.run_dir)
        detector.set_postprocess(conf=conf)
        out = tmp_path / f"conf{conf}"
        report = detector.evaluate(str(boxes_data), split="val", out_dir=out, progress=False)
        assert report.gallery_conf == conf
        pixels = np.asarray(Image.open(out / "gallery.png").convert("RGB")).astype(int)
        close = np.abs(pixels - np.array(PREDICTED)).max(axis=-1) <= 12
        return int(close.sum())

    assert predicted_pixels(1.0) == 0
    assert predicted_pixels(0.0) > 100


def test_flip_tta_sees_a_mirrored_photo_as_the_mirror_image_of_the_photo(
    detect_run, boxes_data, tmp_path
):
    """With both passes fused, a photo and its mirror image are the same input to TTA: the
    detections of one are the mirrored detections of the other."""
    detector = cnnkit.load(detect_run.best)
    photo = np.asarray(Image.open(boxes_data / "images" / "p1.png"))
    plain = detector.predict(photo, conf=0.05, tta="flip")
    mirrored = detector.predict(np.ascontiguousarray(photo[:, ::-1]), conf=0.05, tta="flip")
    assert plain.detections and mirrored.detections
    # the best box of each is the other's mirror image (within resampling: under a pixel); the
    # weaker ones of a 2-epoch model may pair differently when their scores differ in the 4th digit
    top, top_mirrored = plain.detections[0], mirrored.detections[0]
    back = mirror_boxes(torch.tensor([top_mirrored.box]), photo.shape[1])[0]
    assert torch.allclose(torch.tensor(top.box), back, atol=1.0)
    # scores in bf16 where the CPU runs it (1 / 512 apart near 0.4): two steps of it, which
    # Intel's AMX kernels take where AMD's AVX512-BF16 ones take none
    assert top.score == pytest.approx(top_mirrored.score, abs=4e-3)
    confident = detector.predict(photo, conf=0.3, tta="flip").detections
    assert confident and all(
        d.score > 0.3 for d in confident
    )  # --conf holds for the fused scores too


def test_evaluate_and_predict_take_tta_flip(detect_run, boxes_data, tmp_path, capsys):
    detector = cnnkit.load(detect_run.best)
    plain = detector.evaluate(str(boxes_data), split="val", progress=False, out_dir=tmp_path / "a")
    flipped = detector.evaluate(
        str(boxes_data), split="val", progress=False, out_dir=tmp_path / "b", tta="flip"
    )
    assert 0 <= flipped.map <= 1 and flipped.images == plain.images
    assert flipped.to_dict()["tta"] == "flip" and plain.to_dict()["tta"] == "none"
    assert "(TTA flip)" in flipped.lines()[0]
    image = str(boxes_data / "images" / "p0.png")
    assert main(["predict", str(detect_run.run_dir), image, "--tta", "flip", "--json"]) == 0
    assert "detections" in capsys.readouterr().out
    assert main(["predict", str(detect_run.run_dir), image, "--tta", "flip-translate"]) != 0
    assert "none or flip" in capsys.readouterr().err
