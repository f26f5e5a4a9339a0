"""Segmentation through the engine, as a user runs it: train -> evaluate -> predict on a tiny set
of images the test draws, exact resume, a layer-spec FCN, show-batch, and the refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cnnkit
from cnnkit.cli import main
from cnnkit.config import TrainConfig
from cnnkit.engine.device import Precision
from cnnkit.engine.fit import Trainer
from cnnkit.errors import CnnkitError
from cnnkit.tasks.segment.augment import paste_objects
from cnnkit.tasks.segment.predictor import Segmenter
from cnnkit.tasks.segment.task import SegmentTask
from stop_after import StopAfter

CLASSES = ["background", "red", "blue"]
FCN_LAYERS = (
    "conv2d:16:3:padding=same,relu,maxpool2d,conv2d:16:3:padding=same,relu,upsample,conv2d:kernel=1"
)


def write_dataset(root: Path, n: int = 12, seed: int = 0) -> Path:
    """root/images/*.png + root/masks/*_mask.png + classes.txt: grey noise photos of 56 x 72 px
    with a red rectangle (class 1) and, in every other image, a blue one (class 2)."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        photo = rng.integers(90, 160, (56, 72, 3), dtype=np.uint8)
        mask = np.zeros((56, 72), np.uint8)
        for label, colour in ((1, (230, 30, 30)), (2, (30, 30, 230)))[: 1 + i % 2]:
            x, y = int(rng.integers(0, 40)), int(rng.integers(0, 30))
            w, h = int(rng.integers(14, 30)), int(rng.integers(12, 24))
            photo[y : y + h, x : x + w] = colour
            mask[y : y + h, x : x + w] = label
        Image.fromarray(photo).save(root / "images" / f"s{i}.png")
        Image.fromarray(mask).save(root / "masks" / f"s{i}_mask.png")
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return root


@pytest.fixture(scope="module")
def seg_data(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("seg") / "data")


def seg_options(data: Path, **extra):
    options = dict(
        data=str(data),
        model="lraspp",
        epochs=2,
        batch_size=4,
        image_size=64,
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
def seg_run(seg_data, tmp_path_factory):
    project = tmp_path_factory.mktemp("runs")
    return cnnkit.train(project=str(project), name="seg", progress=False, **seg_options(seg_data))


def test_a_segmenter_trains_into_a_run_folder_and_mIoU_picks_best(seg_run):
    history = seg_run.history
    assert len(history) == 2 and {"train_loss", "train_ce", "val_miou"} <= set(history[0])
    assert all(np.isfinite(row["train_loss"]) for row in history)
    assert seg_run.metrics["task"] == "segment" and seg_run.metrics["best_by"] == "val_miou"
    best = max(range(2), key=lambda i: history[i]["val_miou"])
    assert seg_run.metrics["best_epoch"] == best + 1
    ckpt = torch.load(seg_run.best, weights_only=True)
    assert ckpt["task"] == "segment" and ckpt["classes"] == CLASSES
    assert ckpt["model"]["name"] == "lraspp_mobilenet_v2"


def test_evaluate_scores_the_runs_validation_images_at_their_own_size(seg_run, seg_data, tmp_path):
    segmenter = cnnkit.load(seg_run.best)
    assert isinstance(segmenter, Segmenter)
    report = cnnkit.evaluate(  # in the run's precision, so the figure is the run's own
        seg_run.best, split="val", precision="fp32", out_dir=tmp_path / "eval", progress=False
    )
    assert report.images == 3 and report.metrics.pixels == 3 * 56 * 72
    assert report.miou == pytest.approx(seg_run.metrics["best_val_miou"], abs=1e-6)
    written = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert {"miou", "per_class_iou", "pixel_accuracy", "dice"} <= set(written)
    assert set(written["per_class_iou"]) == set(CLASSES)
    for name in ("per_class.csv", "confusion_matrix.csv", "confusion_matrix.png", "gallery.png"):
        assert (tmp_path / "eval" / name).is_file(), name
    flipped = segmenter.evaluate(str(seg_data), split="val", tta="flip", out_dir=tmp_path / "f")
    assert flipped.tta == "flip" and 0.0 <= flipped.miou <= 1.0


def test_predict_gives_a_mask_at_the_original_size_and_saves_class_pngs(
    seg_run, seg_data, tmp_path
):
    segmenter = cnnkit.load(seg_run.best)
    image = Image.open(seg_data / "images" / "s0.png").resize((150, 97))  # not the stored size
    found = segmenter.predict(np.asarray(image))
    assert found.mask.shape == (97, 150) and (found.width, found.height) == (150, 97)
    assert set(np.unique(found.mask)) <= {0, 1, 2}
    assert np.array_equal(np.asarray(found), found.mask) and found.shape == (97, 150)
    assert sum(found.shares.values()) == pytest.approx(1.0)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    paths = [str(seg_data / "images" / "s1.png"), str(bad)]
    results, errors = segmenter.predict_paths(paths, save_masks=tmp_path / "masks")
    assert len(results) == 1 and errors[0][0].endswith("bad.png")
    saved = np.asarray(Image.open(results[0].files["mask"]))
    assert saved.shape == (56, 72) and np.array_equal(saved, results[0].mask)
    assert Path(results[0].files["overlay"]).is_file()
    # predict() is all or nothing: its error names the file, or the input's place in the list
    with pytest.raises(CnnkitError, match=r"^'[^']*bad.png': not an image$"):
        segmenter.predict(paths)
    with pytest.raises(CnnkitError, match=r"^input 1 of the 2: empty image \(0x0 pixels\)$"):
        segmenter.predict([np.asarray(image), Image.new("RGB", (0, 0))])


def test_predict_cli_json_shares_and_save_masks(seg_run, seg_data, tmp_path, capsys):
    out = tmp_path / "cli-masks"
    image = str(seg_data / "images" / "s2.png")
    code = main(["predict", str(seg_run.run_dir), image, "--json", "--save-masks", str(out)])
    assert code == 0
    results = json.loads(capsys.readouterr().out)  # the "written to" line goes to stderr
    assert set(results[0]["shares"]) == set(CLASSES) and "mask" in results[0]
    assert len(list(out.glob("*_overlay.png"))) == 1
    assert main(["predict", str(seg_run.run_dir), image, "--conf", "0.5"]) == 2
    assert "not for segmenters" in capsys.readouterr().err
    assert main(["predict", str(seg_run.run_dir), image, "--box-vote", "0.7"]) == 2
    assert "--box-vote are not for segmenters" in capsys.readouterr().err
    assert main(["evaluate", str(seg_run.run_dir), "--box-vote", "0.7"]) == 2
    assert "--iou and --box-vote are for detectors" in capsys.readouterr().err


def test_a_masks_folder_that_is_a_file_is_one_line_before_any_prediction(
    seg_run, seg_data, tmp_path, capsys
):
    taken = tmp_path / "taken"
    taken.write_text("a file")
    image = str(seg_data / "images" / "s2.png")
    for out in (taken, taken / "below"):
        code = main(["predict", str(seg_run.run_dir), image, "--json", "--save-masks", str(out)])
        captured = capsys.readouterr()
        assert code == 2 and captured.out == ""
        assert captured.err.startswith("cnnkit: error: ") and len(captured.err.splitlines()) == 1
        assert str(taken) in captured.err
    empty = tmp_path / "empty.png"  # a folder named like an image
    empty.mkdir()
    assert main(["predict", str(seg_run.run_dir), str(empty)]) == 2
    assert f"no images in the folder {empty}" in capsys.readouterr().err
    assert main(["predict", str(seg_run.run_dir), str(empty), image, "--json"]) == 0  # the rest
    assert [r["source"] for r in json.loads(capsys.readouterr().out)] == [image]


def test_evaluate_refuses_a_file_as_its_out_folder_before_scoring(seg_run, tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.write_text("a file")
    assert main(["evaluate", str(seg_run.run_dir), "--out", str(taken)]) == 2
    err = capsys.readouterr().err
    assert (
        err == f"cnnkit: error: {taken} is a file, not a folder to write evaluation reports into\n"
    )
    with pytest.raises(CnnkitError, match="is a file, not a folder"):
        cnnkit.load(seg_run.run_dir).evaluate(seg_run.run_dir, out_dir=taken, progress=False)


def test_an_object_model_refuses_class_masks_named_in_a_yaml(seg_data, tmp_path, capsys):
    """A background / object model (instance masks read as one class) evaluated on data whose
    YAML names many classes: its masks are classes, not object ids, and they are not ours."""
    import shutil

    plain = tmp_path / "plain"
    shutil.copytree(seg_data, plain)
    (plain / "classes.txt").unlink()
    run = cnnkit.train(
        project=str(tmp_path / "runs"),
        name="objects",
        progress=False,
        **seg_options(plain, epochs=1, instances="foreground"),
    )
    assert cnnkit.load(run.best).classes == ["background", "object"]
    named = tmp_path / "named"
    shutil.copytree(plain, named)
    (named / "classes.yaml").write_text("names:\n  0: background\n  1: car\n  2: sky\n")
    assert main(["evaluate", str(run.run_dir), "--data", str(named)]) == 2
    err = capsys.readouterr().err
    assert "the data's classes differ from the checkpoint's" in err and "Traceback" not in err


def test_an_interrupted_segmentation_run_resumes_to_the_same_weights(seg_data, tmp_path):
    options = seg_options(seg_data, epochs=2, project=str(tmp_path), seed=1, ema=0.9)
    full = cnnkit.train(name="full", progress=False, **options)
    (tmp_path / "cut").mkdir()
    trainer = Trainer(TrainConfig(name="cut", **options), tmp_path / "cut", progress=False)
    trainer.stop = StopAfter(trainer.steps + 1)  # mid-way through epoch 2
    assert trainer.fit().interrupted
    with pytest.raises(CnnkitError, match="output_stride"):  # not in the weights: refused
        cnnkit.train(resume=tmp_path / "cut", output_stride=32, progress=False)
    resumed = cnnkit.train(resume=tmp_path / "cut", progress=False)
    a = torch.load(full.last, weights_only=True)["state_dict"]
    b = torch.load(resumed.last, weights_only=True)["state_dict"]
    for key, value in a.items():
        assert torch.equal(value, b[key]), key


def test_a_larger_test_image_size_is_what_validation_and_predictions_use(seg_data, tmp_path):
    run = cnnkit.train(
        project=str(tmp_path), progress=False, **seg_options(seg_data, test_image_size=96)
    )
    ckpt = torch.load(run.best, weights_only=True)
    assert ckpt["preprocessing"]["size"] == [96, 96] and ckpt["config"]["image_size"] == 64
    segmenter = cnnkit.load(run.best, precision="fp32")
    assert segmenter.size == 96
    report = segmenter.evaluate(str(seg_data), split="val", out_dir=tmp_path / "e", progress=False)
    assert report.miou == pytest.approx(run.metrics["best_val_miou"], abs=1e-6)
    found = segmenter.predict(str(seg_data / "images" / "s3.png"))
    assert found.mask.shape == (56, 72)  # still the image's own size
    with pytest.raises(CnnkitError, match="one input size"):
        cnnkit.train(
            project=str(tmp_path),
            progress=False,
            **seg_options(seg_data, task="segment", model=FCN_LAYERS, test_image_size=96),
        )
    with pytest.raises(CnnkitError, match="is for segmenters"):
        cnnkit.train(
            data="cifar10-sample", test_image_size=64, project=str(tmp_path), progress=False
        )


def test_a_layer_spec_fcn_trains_with_dice_and_class_weights(seg_data, tmp_path):
    run = cnnkit.train(
        progress=False,
        project=str(tmp_path),
        **seg_options(
            seg_data,
            task="segment",
            model=FCN_LAYERS,
            optimizer="adam",
            lr=3e-3,
            epochs=3,
            dice=0.5,
            class_weights="auto",
        ),
    )
    assert {"train_ce", "train_dice"} <= set(run.history[0])
    assert run.history[-1]["train_loss"] < run.history[0]["train_loss"]
    found = cnnkit.load(run.best).predict(str(seg_data / "images" / "s3.png"))
    assert found.mask.shape == (56, 72)


def test_show_batch_overlays_the_augmented_masks(seg_data, tmp_path, capsys):
    out = tmp_path / "batch.png"
    args = ["show-batch", "--data", str(seg_data), "--model", "lraspp", "--image-size", "64"]
    assert main([*args, "--augment", "standard", "--n", "4", "--out", str(out)]) == 0
    assert Image.open(out).size[0] > 64 and "4 training images" in capsys.readouterr().out
    assert main([*args, "--copy-paste", "1", "--n", "4", "--out", str(out)]) == 0
    assert "copy-paste 1" in capsys.readouterr().out
    # an option the task does not take is refused as train refuses it, not ignored
    cifar = ["show-batch", "--data", "cifar10-sample", "--copy-paste", "1", "--out", str(out)]
    assert main(cifar) == 2
    assert "--copy-paste is for segmenters" in capsys.readouterr().err


def test_copy_paste_lays_another_training_images_objects_over_each_sample(seg_data):
    cfg = TrainConfig(**seg_options(seg_data, augment="none", copy_paste=1.0))
    task = SegmentTask(cfg, torch.device("cpu"), Precision(torch.device("cpu"), "fp32"), False)
    task.load_data(progress=False)
    boxed = [task.letterboxed(i) for i in range(len(task.data.train))]
    generator = torch.Generator().manual_seed(0)
    changed = 0
    for i, (image, mask) in enumerate(boxed):
        pasted = task.training_sample(i, generator)
        sources = [paste_objects(image, mask, *other) for other in boxed]
        assert any(torch.equal(pasted[0], s[0]) and torch.equal(pasted[1], s[1]) for s in sources)
        changed += not torch.equal(pasted[1], mask)
    assert changed >= len(boxed) // 2  # most draws are another image, whose objects land
    assert "copy-paste 1" in task.augmentation_text()
    task.cfg.copy_paste = 0.0
    plain = task.training_sample(0, torch.Generator().manual_seed(0))
    assert torch.equal(plain[1], boxed[0][1])


def test_options_a_segmenter_cannot_use_are_refused_in_one_line(seg_data, tmp_path):
    refused = (
        {"mixup": 0.2},
        {"label_smoothing": 0.1},
        {"fpn_channels": 64},
        {"tta": "flip-translate"},
        {"resize": "shorter"},
        {"augment": "strong"},
    )
    for extra in refused:
        with pytest.raises(CnnkitError):
            cnnkit.train(project=str(tmp_path), progress=False, **seg_options(seg_data, **extra))
    with pytest.raises(CnnkitError, match="is for segmenters"):
        cnnkit.train(data="cifar10-sample", dice=0.5, project=str(tmp_path), progress=False)
    with pytest.raises(CnnkitError, match="is for segmenters"):
        cnnkit.train(data="cifar10-sample", copy_paste=0.5, project=str(tmp_path), progress=False)
    with pytest.raises(CnnkitError, match="copy_paste must be a probability"):
        cnnkit.train(project=str(tmp_path), progress=False, **seg_options(seg_data, copy_paste=2))
    with pytest.raises(CnnkitError, match="classifier"):
        cnnkit.train(
            project=str(tmp_path),
            progress=False,
            **seg_options(seg_data, task="segment", model="resnet18"),
        )
    with pytest.raises(CnnkitError, match="DeepLabV3 trains on batches of at least 2"):
        cnnkit.train(
            project=str(tmp_path),
            progress=False,
            **seg_options(seg_data, model="deeplabv3", batch_size=1),
        )
    with pytest.raises(CnnkitError, match="classification dataset"):
        cnnkit.train(project=str(tmp_path), progress=False, **seg_options("cifar10-sample"))
    assert not any(tmp_path.iterdir())  # a run that never started leaves no folder


def test_binary_0_255_masks_are_refused_with_the_option_that_reads_them(tmp_path, capsys):
    """255 is 'ignore': 0/255 masks read as classes hold only background. Train says so and
    names --instances foreground, which then trains on them as object masks."""
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        photo = rng.integers(60, 120, (40, 48, 3), dtype=np.uint8)
        mask = np.zeros((40, 48), np.uint8)
        mask[5 + i : 25 + i, 10:30] = 255
        photo[mask == 255] = (220, 200, 40)
        Image.fromarray(photo).save(data / "images" / f"p{i}.png")
        Image.fromarray(mask).save(data / "masks" / f"p{i}.png")
    (data / "classes.txt").write_text("background\nobject\n")
    options = seg_options(data, epochs=1, image_size=48, val_split=0.34)
    args = ["train", "--data", str(data), "--model", "lraspp", "--epochs", "1"]
    args += ["--image-size", "48", "--project", str(tmp_path / "runs"), "--no-progress"]
    assert main(args) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "training masks hold only one class ('background')" in err
    assert "255, which means 'ignore'" in err and "--instances foreground" in err
    assert not any((tmp_path / "runs").glob("*"))  # no run folder left behind
    run = cnnkit.train(
        project=str(tmp_path / "runs"), progress=False, instances="foreground", **options
    )
    assert cnnkit.load(run.best).classes == ["background", "object"]
    assert run.history and "val_miou" in run.history[-1]


def test_jpeg_masks_are_read_with_a_note_that_they_are_lossy(seg_data, tmp_path, capsys):
    data = tmp_path / "data"
    (data / "masks").mkdir(parents=True)
    (data / "images").symlink_to(seg_data / "images")
    (data / "classes.txt").write_text((seg_data / "classes.txt").read_text())
    for mask in sorted((seg_data / "masks").glob("*.png")):
        Image.open(mask).save(data / "masks" / f"{mask.stem}.jpg", quality=95)
    assert main(["datasets", "--inspect", str(data), "--task", "segment"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "12 masks are lossy JPG files" in out and "save masks as PNG" in out


@pytest.mark.shared_data
def test_coco128_masks_train_end_to_end_with_their_non_contiguous_ids(tmp_path):
    from detect_files import shared_dataset

    data = shared_dataset("coco128")
    run = cnnkit.train(
        data=str(data / "segmentation.yaml"),
        model="lraspp",
        epochs=1,
        batch_size=8,
        image_size=96,
        val_split=0.1,
        optimizer="sgd",
        lr=0.01,
        precision="fp32",
        project=str(tmp_path),
        progress=False,
    )
    ckpt = torch.load(run.best, weights_only=True)
    assert len(ckpt["classes"]) == ckpt["num_classes"] > 80
    assert np.isfinite(run.history[0]["train_loss"]) and run.history[0]["val_miou"] is not None
