"""Evaluating a detector or segmenter on someone else's held-out folder: files that cannot be
read or paired are named, counted and recorded (never dropped without a word), a folder of
the same name elsewhere never overwrites another evaluation, and data without a true box has
no mAP rather than COCO's -1."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import cnnkit
from cnnkit.cli import main
from cnnkit.tasks.detect.dataset import BoxTarget, DetectionSet
from cnnkit.tasks.detect.inference import to_original
from cnnkit.tasks.evaluation_data import evaluation_folder
from test_detect_task import write_masks_dataset
from test_segment_task import write_dataset


def spoil(root, images: str) -> list[str]:
    """Add the bad files a held-out folder may hold; their names."""
    folder = root / images
    (folder / "zero.png").write_bytes(b"")
    (folder / "text.png").write_text("not a png")
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(folder / "nomask.png")
    return ["zero.png", "text.png", "nomask.png"]


@pytest.mark.parametrize("task", ["detect", "segment"])
def test_evaluate_names_and_records_the_files_it_left_out(
    task, tiny_detector_run, tiny_segmenter_run, tmp_path, capsys
):
    run, _ = tiny_detector_run if task == "detect" else tiny_segmenter_run
    writer = write_masks_dataset if task == "detect" else write_dataset
    try:
        _left_out_and_folders(run, writer, tmp_path, capsys)
    finally:  # the session's run folder is shared: leave it as it was
        for made in run.run_dir.glob("eval-heldout-*"):
            shutil.rmtree(made)


def _left_out_and_folders(run, writer, tmp_path, capsys) -> None:
    held = writer(tmp_path / "a" / "heldout", n=4, seed=7)
    bad = spoil(held, "images")
    assert main(["evaluate", str(run.run_dir), "--data", str(held)]) == 0
    captured = capsys.readouterr()
    assert "skipped 3 file(s)" in captured.err and "Traceback" not in captured.err
    assert "left out 3 file(s)" in captured.out
    folder = run.run_dir / "eval-heldout-test"
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["images"] == 4 and metrics["data"] == str(held.resolve())
    left_out = sorted(entry["file"].rsplit("/", 1)[-1] for entry in metrics["skipped"])
    assert left_out == sorted(bad)

    # a held-out folder of the same name elsewhere gets its own report; the first one stays
    other = writer(tmp_path / "b" / "heldout", n=2, seed=8)
    assert main(["evaluate", str(run.run_dir), "--data", str(other)]) == 0
    capsys.readouterr()
    assert json.loads((folder / "metrics.json").read_text())["images"] == 4
    second = json.loads((run.run_dir / "eval-heldout-test-2" / "metrics.json").read_text())
    assert second["images"] == 2 and second["skipped"] == []
    # the same data again replaces its own report; flip TTA has a folder of its own
    assert main(["evaluate", str(run.run_dir), "--data", str(other), "--tta", "flip"]) == 0
    assert main(["evaluate", str(run.run_dir), "--data", str(other)]) == 0
    assert not (run.run_dir / "eval-heldout-test-3").exists()
    assert (run.run_dir / "eval-heldout-test-tta-flip" / "metrics.json").is_file()
    # an unsplit folder has no parts: --split train scores all of it, and says so
    capsys.readouterr()
    assert main(["evaluate", str(run.run_dir), "--data", str(other), "--split", "train"]) == 0
    assert f"scoring all 2 images of {other}" in capsys.readouterr().err
    assert main(["evaluate", str(run.run_dir), "--data", str(other), "--split", "val"]) == 2
    assert "--split test scores all of it" in capsys.readouterr().err


@pytest.mark.parametrize("task", ["detect", "segment"])
def test_evaluating_one_split_names_only_the_files_that_split_left_out(
    task, tiny_detector_run, tiny_segmenter_run, tmp_path, capsys
):
    """Held-out data with train/ and test/ parts: a bad file of train/ is no concern of the
    test split's evaluation, and is of train's."""
    run, _ = tiny_detector_run if task == "detect" else tiny_segmenter_run
    writer = write_masks_dataset if task == "detect" else write_dataset
    held = writer(tmp_path / "split", n=6, seed=5)
    for part, names in (("train", ("p0", "p1", "p2")), ("test", ("p3", "p4", "p5"))):
        for folder, suffix in (("images", ".png"), ("masks", "_mask.png")):
            (held / folder / part).mkdir()
            for stem in names:
                stem = stem if task == "detect" else stem.replace("p", "s")
                (held / folder / f"{stem}{suffix}").rename(held / folder / part / f"{stem}{suffix}")
    bad = spoil(held, "images/train")
    out = tmp_path / "out"
    for split, expected in (("test", []), ("train", sorted(bad))):
        report = cnnkit.load(run.run_dir).evaluate(str(held), split=split, out_dir=out / split)
        metrics = json.loads((out / split / "metrics.json").read_text())
        left_out = sorted(entry["file"].rsplit("/", 1)[-1] for entry in metrics["skipped"])
        assert left_out == expected and report.images == 3, split
        err = capsys.readouterr().err
        assert ("skipped 3 file(s)" in err) == bool(expected), err


def test_only_a_validation_split_carved_from_train_shares_trains_skipped_files():
    from types import SimpleNamespace

    from cnnkit.tasks.detect.formats.records import skipped_of

    skipped = [("train/bad.png", "truncated PNG"), ("test/bad.png", "not an image")]
    splits = SimpleNamespace(
        skipped=skipped, skipped_in={0: "train", 1: "test"}, val_source="split"
    )
    assert skipped_of(splits, "test") == skipped[1:]
    assert skipped_of(splits, "val") == skipped[:1]  # carved out of train: train's concern it
    assert skipped_of(splits, "train") == skipped[:1]
    splits.val_source = "folder"
    assert skipped_of(splits, "val") == []


def test_an_evaluation_folder_is_kept_for_its_own_data(tmp_path):
    checkpoint = tmp_path / "run" / "best.pt"
    checkpoint.parent.mkdir()
    (tmp_path / "x" / "data").mkdir(parents=True)
    (tmp_path / "y" / "data").mkdir(parents=True)
    first = evaluation_folder(checkpoint, tmp_path / "x" / "data", "test")
    assert first.name == "eval-data-test"
    assert evaluation_folder(checkpoint, tmp_path / "x" / "data", "test") == first
    assert evaluation_folder(checkpoint, tmp_path / "y" / "data", "test").name == (
        "eval-data-test-2"
    )
    (checkpoint.parent / "eval-data-val").mkdir()  # from before the marker: never replaced
    assert evaluation_folder(checkpoint, tmp_path / "x" / "data", "val").name == "eval-data-val-2"
    # another model file of the run (last.pt, an int8 export) keeps a report of its own
    for other, name in (("last.pt", "eval-data-test-last"), ("best.int8.onnx", None)):
        folder = evaluation_folder(checkpoint.parent / other, tmp_path / "x" / "data", "test")
        assert folder.name == (name or f"eval-data-test-{other}") and folder != first


def test_data_without_a_true_box_has_no_map_instead_of_minus_one(tiny_detector_run, tmp_path):
    run, _ = tiny_detector_run
    held = write_masks_dataset(tmp_path / "empty", n=3, seed=3)
    for mask in (held / "masks").glob("*.png"):
        Image.fromarray(np.zeros((96, 120), np.uint8)).save(mask)
    report = cnnkit.load(run.run_dir).evaluate(str(held), out_dir=tmp_path / "out")
    assert report.boxes == 0 and "no true box, so no mAP" in report.lines()[0]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["map"] is None and metrics["map_50"] is None and metrics["mar_100"] is None


def test_boxes_clipped_flat_are_no_detections():
    data = DetectionSet(
        [torch.zeros((3, 12, 400), dtype=torch.uint8)],
        [BoxTarget(torch.zeros((0, 4)), torch.zeros(0, dtype=torch.int64))],
        ["thing"],
        ["wide.png"],
        [(12, 400)],
    )
    found = {
        "boxes": torch.tensor([[10.0, 2.0, 50.0, 9.0], [10.0, 20.0, 50.0, 30.0]]),  # 2nd: below
        "scores": torch.tensor([0.9, 0.8]),
        "labels": torch.tensor([0, 0]),
    }
    kept = to_original([found], data)[0]
    assert kept["boxes"].tolist() == [[10.0, 2.0, 50.0, 9.0]] and kept["scores"].tolist() == [
        pytest.approx(0.9)
    ]
    assert kept["labels"].tolist() == [0]


def test_a_pennfudan_segmenter_reads_held_out_instance_masks_without_a_classes_file(
    tmp_path, tiny_segmenter_run
):
    """Trained on PNGImages/ + PedMasks/ (instance ids read as person), a segmenter evaluates
    held-out images/ + masks/ of instance ids the same way, with no classes.txt to write."""
    from test_segment_task import seg_options

    train = write_masks_dataset(tmp_path / "pf", n=8, seed=1)
    (train / "images").rename(train / "PNGImages")
    (train / "masks").rename(train / "PedMasks")
    (train / "classes.txt").unlink()
    run = cnnkit.train(
        project=str(tmp_path / "runs"), name="s", progress=False, **seg_options(train, epochs=1)
    )
    assert torch.load(run.best, weights_only=True)["instances"] == "foreground"
    # class masks (images/ + masks/ + classes.txt) record "auto": a held-out layout reads as its own
    classes_run, _ = tiny_segmenter_run
    assert torch.load(classes_run.best, weights_only=True)["instances"] == "auto"
    held = write_masks_dataset(tmp_path / "held", n=3, seed=2)
    (held / "classes.txt").unlink()
    report = cnnkit.load(run.run_dir).evaluate(str(held), out_dir=tmp_path / "out")
    assert report.images == 3 and report.classes == ["background", "person"]
    assert report.metrics.pixels == 3 * 96 * 120


def test_a_class_mismatch_quotes_names_that_hold_commas():
    from cnnkit.errors import CnnkitError
    from cnnkit.tasks.evaluation_data import classes_in_our_order

    assert classes_in_our_order(["b", "a"], ["a", "b"]).tolist() == [1, 0]
    # the same names in Unicode's decomposed form (folders unzipped on a Mac) are the same
    composed, decomposed = "caf\u00e9 noir", "cafe\u0301 noir"
    assert classes_in_our_order([decomposed, "b"], ["b", composed]).tolist() == [1, 0]
    with pytest.raises(CnnkitError) as caught:
        classes_in_our_order(["malignant", "normal, benign"], ["normal", "pneumonia"])
    assert str(caught.value) == (
        "the data's classes differ from the checkpoint's: 'malignant', 'normal, benign' not "
        "among the model's 2 classes ('normal', 'pneumonia')"
    )


def test_a_test_split_without_a_true_box_records_no_map(tmp_path, capsys):
    from test_detect_task import detect_options

    root = tmp_path / "data"
    for split, seed in (("train", 0), ("test", 4)):
        part = write_masks_dataset(tmp_path / split, n=4 if split == "test" else 8, seed=seed)
        if split == "test":
            for mask in (part / "masks").glob("*.png"):
                Image.fromarray(np.zeros((96, 120), np.uint8)).save(mask)
        for kind in ("images", "masks"):
            (root / kind).mkdir(parents=True, exist_ok=True)
            (part / kind).rename(root / kind / split)
    (root / "classes.txt").write_text("box\n")
    options = detect_options(root, epochs=1, project=str(tmp_path / "runs"))
    run = cnnkit.train(name="d", progress=False, **options)
    assert "4 images without a true box, so no mAP to report" in capsys.readouterr().out
    assert run.metrics["test_map"] is None and run.metrics["test_images"] == 4
