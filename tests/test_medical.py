"""Medical images as their users work with them: MedMNIST's npz files (the shared official
train/val arrays and files the tests write), the named sets offline, ROC AUC and average
precision on hand-computed cases, the two-class threshold chosen on validation and used by
predict, evaluate, export and the report."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import cnnkit
from cnnkit.cli import main
from cnnkit.data import load_data
from cnnkit.tasks.classify.metrics import classification_report
from cnnkit.tasks.classify.roc import choose_threshold, one_vs_rest, operating_point

MEDMNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "medmnist"


@pytest.fixture
def pneumonia() -> Path:
    path = MEDMNIST / "pneumoniamnist.npz"
    if not path.is_file():
        if os.environ.get("CNNKIT_REQUIRE_SHARED_DATA") == "1":
            pytest.fail(f"CNNKIT_REQUIRE_SHARED_DATA=1 but {path} is missing")
        pytest.skip(f"shared MedMNIST not found at {MEDMNIST}")
    return path


def write_npz(path: Path, grey: bool = True, splits=("train", "val", "test"), n=40, classes=3):
    rng = np.random.default_rng(0)
    arrays = {}
    for split in splits:
        shape = (n, 28, 28) if grey else (n, 28, 28, 3)
        labels = np.arange(n) % classes
        images = rng.integers(0, 60, size=shape, dtype=np.uint8)
        images[labels == 1] += 120  # a class a network can tell apart
        arrays[f"{split}_images"] = images
        arrays[f"{split}_labels"] = labels[:, None].astype(np.uint8)
    np.savez(path, **arrays)
    return path


# ---- reading -----------------------------------------------------------------------------------


def test_the_shared_pneumonia_file_reads_with_its_class_names_and_splits(pneumonia):
    data = load_data(str(pneumonia), progress=False)
    assert data.classes == ["normal", "pneumonia"]
    assert (len(data.train), len(data.val), data.test) == (4708, 524, None)
    assert data.val_source == "folder"  # MedMNIST's own val split, not a carve-out
    images = data.train.images
    assert images.shape[1:] == (3, 28, 28)
    assert torch.equal(images[:, 0], images[:, 1]) and torch.equal(images[:, 1], images[:, 2])
    raw = np.load(pneumonia)
    assert np.array_equal(images[:5, 0].numpy(), raw["train_images"][:5])
    assert data.train.labels[:5].tolist() == raw["train_labels"][:5, 0].tolist()


def test_datasets_inspect_reads_an_npz_without_task(tmp_path, capsys):
    import json

    from cnnkit.cli import main

    path = write_npz(tmp_path / "mine.npz", splits=("train", "test"), n=10, classes=3)
    assert main(["datasets", "--inspect", str(path), "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["classes"] == ["0", "1", "2"]
    assert found["images"] == {
        "train": {"0": 4, "1": 3, "2": 3},
        "test": {"0": 4, "1": 3, "2": 3},
    }


def test_an_npz_of_any_name_reads_colour_and_grey(tmp_path):
    grey = load_data(str(write_npz(tmp_path / "mine.npz")), progress=False)
    assert grey.classes == ["0", "1", "2"] and len(grey.test) == 40
    colour = load_data(str(write_npz(tmp_path / "rgb.npz", grey=False)), progress=False)
    assert colour.train.images.shape == (40, 3, 28, 28)
    resized = load_data(str(tmp_path / "rgb.npz"), image_size=32, progress=False)
    assert resized.train.images.shape[2:] == (32, 32)


def test_16_bit_and_float_npz_images_read_as_the_file_decoder_reads_them(tmp_path):
    """uint16 scaled by its type; floats by the range the values lie in (0-1, 0-255,
    0-65535); a pixel that is no number is black. Each reads as the uint8 file it came from."""
    original = write_npz(tmp_path / "u8.npz", splits=("train",))
    arrays = dict(np.load(original))
    pixels = arrays["train_images"]
    as_uint8 = load_data(str(original), val_split=0.0, progress=False).train.images
    assert torch.equal(as_uint8[:, 0], torch.from_numpy(pixels))  # uint8 as it was
    unit = pixels / 255.0
    unit[0, 0, 0] = np.nan
    variants = {
        "u16": pixels.astype(np.uint16) * 257,
        "u16-big-endian": (pixels.astype(np.uint16) * 257).astype(">u2"),  # FITS's order
        "unit": unit,
        "f255": pixels.astype(np.float32),
        "f65535": pixels.astype(np.float64) * 257,
    }
    for name, images in variants.items():
        np.savez(tmp_path / f"{name}.npz", **{**arrays, "train_images": images})
        read = load_data(str(tmp_path / f"{name}.npz"), val_split=0.0, progress=False)
        expected = as_uint8.clone()
        if name == "unit":
            expected[0, :, 0, 0] = 0
        assert read.train.images.dtype == torch.uint8, name
        assert torch.equal(read.train.images, expected), name


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_bytes(b"not a zip at all"), "not a readable .npz"),
        (lambda p: p.write_bytes(b""), "not a readable .npz"),
        (
            lambda p: np.savez(
                p,
                train_images=np.zeros((0, 28, 28), np.uint8),
                train_labels=np.zeros((0, 1), np.uint8),
            ),
            "holds no labelled images (its splits are empty)",
        ),
        (lambda p: np.savez(p, images=np.zeros((2, 28, 28), np.uint8)), "holds no train_images"),
        (
            lambda p: np.savez(
                p,
                train_images=np.zeros((2, 28, 28), np.uint8),
                train_labels=np.full((2, 14), 2, np.uint8),
            ),
            "read as multi-label; each must be 0 or 1",
        ),
        (
            lambda p: np.savez(
                p,
                train_images=np.zeros((3, 28, 28), np.uint8),
                train_labels=np.zeros((2, 1), np.uint8),
            ),
            "3 train images but 2 labels",
        ),
        (
            lambda p: np.savez(
                p,
                train_images=np.zeros((2, 28, 28), np.int32),
                train_labels=np.zeros((2, 1), np.uint8),
            ),
            "train_images: pixel type int32 (use uint8, uint16 or float)",
        ),
        (
            lambda p: np.savez(
                p,
                train_images=np.full((2, 28, 28), np.nan, np.float32),
                train_labels=np.zeros((2, 1), np.uint8),
            ),
            "train_images: pixel values that are not numbers (NaN or infinite)",
        ),
        (
            lambda p: np.savez(
                p,
                train_images=np.linspace(-5000, 300, 2 * 28 * 28).reshape(2, 28, 28),
                train_labels=np.zeros((2, 1), np.uint8),
            ),
            "float pixel values -5000..300 lie in no image range (0-1, 0-255 or 0-65535)",
        ),
        (
            lambda p: np.savez(
                p,
                train_images=np.zeros((2, 28, 28), np.uint8),
                train_labels=np.array([[0.0], [1.0]], np.float32),
            ),
            "train_labels must be whole class numbers (an integer array), not float32",
        ),
    ],
)
def test_bad_npz_files_are_one_line(tmp_path, capsys, make, message):
    path = tmp_path / "bad.npz"
    make(path)
    assert main(["train", "--data", str(path), "--epochs", "1", "--project", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "simple_cnn").exists()  # nothing half-made


def test_a_named_set_offline_says_which_file_to_put_where(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CNNKIT_OFFLINE", "1")
    monkeypatch.setenv("CNNKIT_DATA", str(tmp_path / "root"))
    assert main(["train", "--data", "breastmnist", "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "breastmnist.npz" in err and "zenodo.org/records/10519652" in err
    assert str(tmp_path / "root") in err and len(err.splitlines()) == 1


def test_a_named_set_in_the_data_root_is_used(pneumonia, tmp_path):
    shutil.copy(pneumonia, tmp_path / "pneumoniamnist.npz")
    data = load_data("pneumoniamnist", data_root=tmp_path, splits=("val",), progress=False)
    assert data.name == "pneumoniamnist" and len(data.val) == 524


def test_chestmnist_reads_as_multi_label_with_its_finding_names(tmp_path):
    labels = np.zeros((2, 14), np.uint8)
    labels[0, [0, 13]] = 1
    np.savez(
        tmp_path / "chestmnist.npz",
        train_images=np.zeros((2, 28, 28), np.uint8),
        train_labels=labels,
    )
    data = load_data(str(tmp_path / "chestmnist.npz"), val_split=0.0, progress=False)
    assert data.classes[0] == "atelectasis" and data.classes[13] == "hernia"
    assert data.train.multilabel and data.train.labels.tolist()[0][13] == 1.0


# ---- metrics on hand-computed cases ------------------------------------------------------------


def test_auc_ap_and_the_youden_threshold_on_a_hand_computed_case():
    scores = torch.tensor([0.1, 0.4, 0.35, 0.8])
    labels = torch.tensor([0, 0, 1, 1])
    probs = torch.stack([1 - scores, scores], 1)
    ranking = one_vs_rest(probs, labels)
    # pairs (positive, negative) ranked right: (0.35>0.1), (0.8>0.1), (0.8>0.4) of 4 -> 0.75
    assert ranking["auc"] == pytest.approx(0.75)
    # precision at each positive: 0.8 -> 1/1, 0.35 -> 2/3; AP = (1 + 2/3) / 2
    assert ranking["average_precision"] == pytest.approx(5 / 6)
    # J = sens + spec - 1 is 0.5 at 0.8 (1/2 + 1 - 1) and at 0.35 (1 + 1/2 - 1): nearest 0.5
    assert choose_threshold(scores, labels) == pytest.approx(0.35)
    point = operating_point(scores, labels, 0.35)
    assert (point.sensitivity, point.specificity, point.accuracy) == (1.0, 0.5, 0.75)


def test_multi_class_auc_is_the_macro_mean_one_against_the_rest():
    probs = torch.tensor([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.3, 0.3, 0.4], [0.5, 0.4, 0.1]])
    labels = torch.tensor([0, 1, 2, 1])
    # class 0 vs rest: its scores 0.8 (pos) over 0.2, 0.3, 0.5: 1.0; class 1: positives 0.7,
    # 0.4 over negatives 0.1, 0.3: 1.0; class 2: 0.4 over 0.1, 0.1, 0.1: 1.0
    assert one_vs_rest(probs, labels)["auc"] == pytest.approx(1.0)
    probs[1] = torch.tensor([0.2, 0.3, 0.5])
    # class 0 still 1.0; class 1: positives 0.3, 0.4 against negatives 0.1, 0.3: 3.5 of 4
    # pairs (a tie counts half); class 2: 0.4 against 0.1, 0.5, 0.1: 2 of 3
    expected = (1.0 + 3.5 / 4 + 2 / 3) / 3
    assert one_vs_rest(probs, labels)["auc"] == pytest.approx(expected)


def test_the_report_uses_the_threshold_it_is_given():
    logits = torch.tensor([[0.0, 0.2], [0.0, -0.2], [0.0, 1.0], [0.0, -1.0]])
    labels = torch.tensor([0, 1, 1, 0])
    default = classification_report(logits, labels, ["neg", "pos"])
    assert default.operating.threshold == 0.5 and not default.threshold_chosen
    strict = classification_report(logits, labels, ["neg", "pos"], threshold=0.7)
    assert strict.operating.sensitivity == 0.5 and strict.operating.specificity == 1.0
    assert strict.to_dict()["operating_point"]["threshold_from"] == "validation"
    # the threshold decides the classes too: p(pos) 0.55, 0.45, 0.73, 0.27 -> only the third
    assert strict.top1 == 0.75 and default.top1 == 0.5  # argmax: 0.55 and 0.45 both wrong
    assert strict.confusion.tolist() == [[2, 0], [1, 1]]
    assert strict.recall == [1.0, 0.5] and strict.top1 == strict.operating.accuracy
    low = classification_report(logits, labels, ["neg", "pos"], threshold=0.4)
    assert low.confusion.tolist() == [[1, 1], [0, 2]] and low.top1 == 0.75
    assert strict.argmax_top1 == 0.5 and default.argmax_top1 is None  # MedMNIST's ACC kept
    assert strict.to_dict()["top1_accuracy_argmax"] == 0.5


def test_a_rate_over_no_images_is_null_in_metrics_json_and_printed_n_a(capsys):
    from cnnkit.tasks.classify.report import print_report

    logits = torch.tensor([[0.0, 1.0], [0.0, -1.0], [0.0, -2.0]])
    # p(pos) 0.73, 0.27, 0.12: only the first is called positive at 0.5
    cases = (([0, 0, 0], "sensitivity", "specificity", 2 / 3),
             ([1, 1, 1], "specificity", "sensitivity", 1 / 3))  # fmt: skip
    for labels, undefined, kept, rate in cases:
        report = classification_report(logits, torch.tensor(labels), ["neg", "pos"])
        point = report.to_dict()["operating_point"]
        assert point[undefined] is None and point[kept] == pytest.approx(rate), labels
        print_report(report)
        assert f"{undefined} n/a (no " in capsys.readouterr().out


# ---- end to end --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pneumonia_run(tmp_path_factory):
    path = MEDMNIST / "pneumoniamnist.npz"
    if not path.is_file():
        pytest.skip("shared MedMNIST missing")
    return cnnkit.train(
        data=str(path),
        epochs=1,
        project=str(tmp_path_factory.mktemp("med")),
        name="p",
        progress=False,
    )


def test_training_chooses_the_threshold_on_validation_and_stores_it(pneumonia_run):
    ckpt = torch.load(pneumonia_run.best, weights_only=True)
    threshold = ckpt["decision_threshold"]
    assert 0.0 < threshold < 1.0
    report = cnnkit.evaluate(pneumonia_run.run_dir, split="val", progress=False)
    assert report.operating.threshold == pytest.approx(threshold)
    assert report.threshold_chosen and report.auc > 0.8
    # the stored threshold is Youden's best on the validation images themselves
    clf = cnnkit.load(pneumonia_run.run_dir)
    data = load_data(str(MEDMNIST / "pneumoniamnist.npz"), splits=("val",), progress=False)
    positive = clf.predict_images(data.val.images)[:, 1]
    assert choose_threshold(positive, data.val.labels) == pytest.approx(threshold, abs=1e-6)
    html = (pneumonia_run.run_dir / "report.html").read_text()
    assert "<h2>ROC" in html and "sensitivity at" in html


def test_predict_decides_by_the_threshold(pneumonia_run, tmp_path):
    from PIL import Image

    data = np.load(MEDMNIST / "pneumoniamnist.npz")
    files = []
    for i in range(12):
        files.append(tmp_path / f"x{i}.png")
        Image.fromarray(data["val_images"][i]).save(files[-1])
    clf = cnnkit.load(pneumonia_run.run_dir)
    found = clf.predict([str(f) for f in files])
    for p in found:
        pneumonia = dict(p.top_k)["pneumonia"]
        expected = "pneumonia" if pneumonia >= clf.decision_threshold else "normal"
        assert p.label == expected and p.to_dict()["threshold"] == clf.decision_threshold
    clf.decision_threshold = 1.01  # nothing reaches it: every image is called normal
    assert {p.label for p in clf.predict([str(f) for f in files])} == {"normal"}


def test_the_threshold_travels_with_an_export(pneumonia_run, tmp_path):
    from cnnkit.export import export_model

    result = export_model(pneumonia_run.run_dir, "onnx", tmp_path / "p.onnx")
    exported = cnnkit.load(result.path)
    assert exported.decision_threshold == pytest.approx(
        cnnkit.load(pneumonia_run.run_dir).decision_threshold
    )


def test_evaluate_json_has_auc_and_the_operating_point(pneumonia_run, capsys):
    assert main(["evaluate", str(pneumonia_run.run_dir), "--split", "val", "--json",
                 "--no-progress"]) == 0  # fmt: skip
    found = json.loads(capsys.readouterr().out)
    assert found["auc"] > 0.8 and 0 < found["average_precision"] <= 1
    point = found["operating_point"]
    assert point["positive_class"] == "pneumonia" and 0 <= point["sensitivity"] <= 1


def test_a_held_out_test_file_of_any_name_is_scored_as_the_models_classes(
    pneumonia_run, tmp_path, capsys
):
    """A holder of MedMNIST's test split saves it as they like: test_images/test_labels in
    heldout.npz or pneumoniamnist_64.npz are the run's classes; a file without a test split
    is refused instead of scoring its training arrays as "test"."""
    source = np.load(MEDMNIST / "pneumoniamnist.npz")
    images, labels = source["val_images"][:60], source["val_labels"][:60]
    for name in ("heldout.npz", "pneumoniamnist_64.npz"):
        np.savez(tmp_path / name, test_images=images, test_labels=labels)
        argv = ["evaluate", str(pneumonia_run.run_dir), "--data", str(tmp_path / name), "--json"]
        assert main([*argv, "--no-progress"]) == 0, name
        captured = capsys.readouterr()
        found = json.loads(captured.out)
        assert found["images"] == 60 and set(found["per_class"]) == {"normal", "pneumonia"}
        said = "its labels 0-1 read as the model's classes in order (normal, pneumonia)"
        assert (said in captured.err) == (name == "heldout.npz")
    np.savez(tmp_path / "nt.npz", train_images=images, train_labels=labels, test_images=images)
    argv = ["evaluate", str(pneumonia_run.run_dir), "--data", str(tmp_path / "nt.npz")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("has no test split (only train): pass --split train to score its "
                        "training images as held-out data, or --data with test images")  # fmt: skip
    np.savez(tmp_path / "nt.npz", train_images=images, train_labels=labels, val_images=images,
             val_labels=labels)  # fmt: skip
    assert main(argv) == 2
    assert "pass --split val to score its validation" in capsys.readouterr().err


def test_a_test_split_without_positives_records_no_sensitivity(tmp_path, capsys):
    """The run's final test, metrics.json and report.html: undefined, never 0%."""
    path = write_npz(tmp_path / "two.npz", classes=2)
    arrays = dict(np.load(path))
    negatives = arrays["test_labels"][:, 0] == 0
    arrays["test_images"] = arrays["test_images"][negatives]
    arrays["test_labels"] = arrays["test_labels"][negatives]
    np.savez(path, **arrays)
    run = cnnkit.train(data=str(path), epochs=1, project=str(tmp_path), name="r", progress=False)
    assert "sensitivity n/a (no positive image)" in capsys.readouterr().out
    metrics = json.loads((run.run_dir / "metrics.json").read_text())
    assert metrics["test_sensitivity"] is None and 0 <= metrics["test_specificity"] <= 1
    assert "n/a (no positive image)" in (run.run_dir / "report.html").read_text()
