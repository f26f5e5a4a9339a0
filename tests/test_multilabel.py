"""Multi-label classification as its users work with it: ChestMNIST-style npz files with 14 0/1
label columns, CSV lists of ``path,label1;label2``, a folder with labels.csv, BCE training that
learns labels the test draws (coloured squares pasted on the bundled sample's photos), the
per-label thresholds chosen on validation and used by predict, evaluate's figures, and bad
input as one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

import cnnkit
from cnnkit.cli import main
from cnnkit.data import load_data, sample_path
from cnnkit.data.medmnist import MEDMNIST
from cnnkit.errors import CnnkitError
from cnnkit.tasks.classify.multilabel import (
    choose_label_thresholds,
    multilabel_report,
    per_label_ranking,
)

COLOURS = {"red": (230, 20, 20), "green": (20, 210, 20), "blue": (20, 20, 230)}


def photos(n: int, size: int = 28) -> list[Image.Image]:
    """n real photos: the bundled cifar10-sample's training PNGs, resized."""
    files = sorted((sample_path() / "train").glob("*/*.png"))[:n]
    return [Image.open(f).convert("RGB").resize((size, size)) for f in files]


def chest_npz(path: Path, columns: int = 14, n: int = 24) -> np.ndarray:
    """A ChestMNIST-layout file: grey 28 x 28 photos, (n, columns) 0/1 labels per split."""
    grey = np.stack([np.asarray(p.convert("L")) for p in photos(2 * n)])
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, (2 * n, columns)).astype(np.uint8)
    np.savez(
        path,
        train_images=grey[:n],
        train_labels=labels[:n],
        val_images=grey[n:],
        val_labels=labels[n:],
    )
    return labels


def squares_dataset(root: Path, n: int = 240) -> Path:
    """Photos with coloured squares pasted on: each colour present is one label (none, one or
    several per image); rows split 60 / 20 / 20% into train, val and test."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    rows = ["path,labels,split"]
    for i, image in enumerate(photos(n, 32)):
        draw = ImageDraw.Draw(image)
        names = [c for c in COLOURS if rng.random() < 0.5]
        for name in names:
            x, y = (int(v) for v in rng.integers(0, 23, 2))
            draw.rectangle([x, y, x + 8, y + 8], fill=COLOURS[name])
        image.save(root / f"{i}.png")
        split = "train" if i < 0.6 * n else "val" if i < 0.8 * n else "test"
        rows.append(f"{i}.png,{';'.join(names)},{split}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root / "labels.csv"


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    return err


# ---- reading -----------------------------------------------------------------------------------


def test_a_chestmnist_npz_reads_14_named_findings_as_multi_hot_targets(tmp_path):
    labels = chest_npz(tmp_path / "chestmnist.npz")
    data = load_data(str(tmp_path / "chestmnist.npz"), progress=False)
    assert data.classes == list(MEDMNIST["chestmnist"].classes)
    assert data.classes[:2] == ["atelectasis", "cardiomegaly"] and len(data.classes) == 14
    assert data.val_source == "folder" and data.train.multilabel
    assert data.train.labels.dtype == torch.float32 and data.train.labels.shape == (24, 14)
    assert data.train.labels.tolist() == labels[:24].astype(float).tolist()
    assert data.val.labels.tolist() == labels[24:].astype(float).tolist()


def test_an_npz_of_any_name_with_label_columns_is_multi_label_and_splits_at_random(tmp_path):
    chest_npz(tmp_path / "mine.npz", columns=3)
    data = load_data(str(tmp_path / "mine.npz"), progress=False)
    assert data.classes == ["0", "1", "2"] and data.val.multilabel
    # one split only: validation is carved out of train, a seeded random split (no strata)
    arrays = dict(np.load(tmp_path / "mine.npz"))
    np.savez(tmp_path / "one.npz", train_images=arrays["train_images"],
             train_labels=arrays["train_labels"])  # fmt: skip
    first = load_data(str(tmp_path / "one.npz"), val_split=0.25, seed=3, progress=False)
    again = load_data(str(tmp_path / "one.npz"), val_split=0.25, seed=3, progress=False)
    assert (len(first.train), len(first.val)) == (18, 6)
    assert torch.equal(first.val.labels, again.val.labels)
    assert torch.equal(first.val.images, again.val.images)


def test_numbered_single_label_data_is_refused_by_a_model_of_numbered_labels(tmp_path, capsys):
    """An unnamed npz names its labels 0, 1, ...; a single-label file's class numbers are no
    such labels (class 0 is not 'label 0 present'), so evaluating one on the other is refused."""
    labels = chest_npz(tmp_path / "tags.npz", columns=2)
    args = ["--model", "simple_cnn", "--epochs", "1", "--image-size", "28", "--no-progress"]
    assert main(["train", "--data", str(tmp_path / "tags.npz"), *args,
                 "--project", str(tmp_path / "runs"), "--name", "tags"]) == 0  # fmt: skip
    arrays = dict(np.load(tmp_path / "tags.npz"))
    np.savez(tmp_path / "single.npz", test_images=arrays["val_images"],
             test_labels=labels[24:, :1])  # fmt: skip
    capsys.readouterr()
    run = str(tmp_path / "runs" / "tags")
    assert main(["evaluate", run, "--data", str(tmp_path / "single.npz"), "--no-progress"]) == 2
    assert "one class per image, by number" in one_line_error(capsys)
    assert main(["evaluate", run, "--data", str(tmp_path / "tags.npz"), "--split", "val",
                 "--no-progress"]) == 0  # fmt: skip


def test_a_csv_list_names_several_labels_per_row_and_may_name_none(tmp_path):
    for i, image in enumerate(photos(4)):
        image.save(tmp_path / f"{i}.png")
    (tmp_path / "list.csv").write_text("0.png,dog;cat\n1.png,cat\n2.png,\n3.png,bird;dog,val\n")
    data = load_data(str(tmp_path / "list.csv"), progress=False)
    assert data.classes == ["bird", "cat", "dog"] and data.val_source == "folder"
    assert data.train.labels.tolist() == [[0, 1, 1], [0, 1, 0], [0, 0, 0]]
    assert data.val.labels.tolist() == [[1, 0, 1]]
    # a header `path,labels` makes a list multi-label even when no row has a ';'
    (tmp_path / "single.csv").write_text("path,labels\n0.png,dog\n1.png,cat\n")
    assert load_data(str(tmp_path / "single.csv"), val_split=0, progress=False).train.multilabel
    # the same list as a folder with labels.csv at its top
    (tmp_path / "labels.csv").write_text((tmp_path / "list.csv").read_text())
    folder = load_data(str(tmp_path), progress=False)
    assert torch.equal(folder.train.labels, data.train.labels)


def test_a_single_label_csv_still_refuses_an_empty_label(tmp_path):
    (tmp_path / "list.csv").write_text("a.png,cat\nb.png,\n")
    with pytest.raises(CnnkitError, match="line 2: expected path,label"):
        load_data(str(tmp_path / "list.csv"), progress=False)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"train_labels": np.zeros((4, 13), np.uint8)}, "13 column(s), but MedMNIST ChestMNIST"),
        ({"train_labels": np.full((4, 14), 3, np.uint8)}, "each must be 0 or 1"),
        (
            {"train_labels": np.zeros((4, 14), np.uint8), "val_labels": np.zeros((4, 1), np.uint8)},
            "different numbers of columns",
        ),
    ],
)
def test_npz_label_columns_that_do_not_match_are_one_line(tmp_path, capsys, arrays, message):
    images = np.zeros((4, 28, 28), np.uint8)
    splits = {f"{k.split('_')[0]}_images": images for k in arrays}
    np.savez(tmp_path / "chestmnist.npz", **splits, **arrays)
    args = ["train", "--data", str(tmp_path / "chestmnist.npz"), "--project", str(tmp_path)]
    assert main([*args, "--epochs", "1", "--no-progress"]) == 2
    assert message in one_line_error(capsys)


# ---- metrics on hand-computed cases ------------------------------------------------------------


def test_per_label_auc_thresholds_and_exact_match_on_a_hand_computed_case():
    probs = torch.tensor([[0.9, 0.2], [0.6, 0.7], [0.3, 0.4], [0.1, 0.8]])
    targets = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [0.0, 1.0]])
    aucs, aps = per_label_ranking(probs, targets)
    # label 0: positives 0.9, 0.6 over negatives 0.3, 0.1: 1.0; label 1: 0.7, 0.8 over
    # 0.2, 0.4: 1.0
    assert aucs == pytest.approx([1.0, 1.0]) and aps == pytest.approx([1.0, 1.0])
    assert choose_label_thresholds(probs, targets) == pytest.approx([0.6, 0.7])
    report = multilabel_report(probs.logit(), targets, ["a", "b"], [0.6, 0.7])
    assert report.exact_match == 1.0 and report.label_accuracy == 1.0
    loose = multilabel_report(probs.logit(), targets, ["a", "b"], [0.2, 0.2])
    # every probability but 0.1 is called positive: images 1 and 3 get label b wrongly (and
    # image 3 label a too); images 2 and 4 stay right
    assert loose.exact_match == pytest.approx(2 / 4)
    assert loose.labels[0].specificity == pytest.approx(0.5)
    # a label with one side only has no ROC: None, and the macro mean leaves it out
    one_sided = torch.tensor([[1.0, 0.0], [1.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    assert per_label_ranking(probs, one_sided)[0][0] is None
    assert multilabel_report(probs.logit(), one_sided, ["a", "b"]).auc == pytest.approx(1.0)


def test_a_label_with_one_side_only_has_no_rate_for_the_missing_side(tmp_path):
    from cnnkit.tasks.classify.multilabel_report import write_multilabel

    probs = torch.tensor([[0.9, 0.2], [0.6, 0.7], [0.3, 0.4], [0.1, 0.8]])
    targets = torch.tensor([[1.0, 0.0], [1.0, 1.0], [1.0, 0.0], [1.0, 1.0]])  # a: all positive
    report = multilabel_report(probs.logit(), targets, ["a", "b"])
    label = report.to_dict()["per_label"]["a"]
    assert label["specificity"] is None and label["sensitivity"] == pytest.approx(0.5)
    write_multilabel(report, tmp_path)
    row = (tmp_path / "per_label.csv").read_text().splitlines()[1]
    assert row.endswith(",0.500,-")


# ---- end to end --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def squares_run(tmp_path_factory):
    listing = squares_dataset(tmp_path_factory.mktemp("squares") / "data")
    run = cnnkit.train(
        data=str(listing),
        epochs=8,
        project=str(tmp_path_factory.mktemp("ml-runs")),
        name="m",
        progress=False,
    )
    return run, listing


def test_bce_training_learns_the_labels_and_stores_a_threshold_per_label(squares_run):
    run, _ = squares_run
    metrics = json.loads((run.run_dir / "metrics.json").read_text())
    assert metrics["best_by"] == "val_auc" and metrics["best_val_auc"] > 0.8
    assert metrics["test_auc"] > 0.8 and 0 <= metrics["test_exact_match"] <= 1
    history = (run.run_dir / "history.csv").read_text().splitlines()
    assert history[0].split(",")[2:7] == [
        "train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_auc"
    ]  # fmt: skip
    last = dict(zip(history[0].split(","), history[-1].split(","), strict=True))
    assert float(last["train_accuracy"]) > 0.6  # per-label accuracy, not per label cell
    ckpt = torch.load(run.best, weights_only=True)
    thresholds = ckpt["label_thresholds"]
    assert ckpt["classes"] == ["blue", "green", "red"] and ckpt["decision_threshold"] is None
    assert len(thresholds) == 3 and all(0 < t < 1 for t in thresholds)
    assert metrics["label_thresholds"] == pytest.approx(thresholds)
    # they are Youden's best per label on the validation rows, for best.pt's weights
    clf = cnnkit.load(run.run_dir)
    val = load_data(str(squares_run[1]), splits=("val",), progress=False).val
    probs = clf.predict_images(val.images)
    assert choose_label_thresholds(probs, val.labels) == pytest.approx(thresholds, abs=1e-6)


def test_predict_gives_every_label_and_those_over_their_thresholds(squares_run, capsys):
    run, listing = squares_run
    images = [str(listing.parent / f"{i}.png") for i in range(200, 210)]
    clf = cnnkit.load(run.run_dir)
    for found in clf.predict(images):
        probs = dict(found.probabilities)
        over = {name for name, t in zip(clf.classes, clf.label_thresholds, strict=True)
                if probs[name] >= t}  # fmt: skip
        assert set(found.labels) == over
    clf.label_thresholds = [1.01, 1.01, 1.01]  # nothing reaches them
    assert all(p.labels == [] for p in clf.predict(images))
    assert main(["predict", str(run.run_dir), *images[:2], "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out[0]) >= {"source", "labels", "probabilities", "thresholds"}
    assert set(out[0]["probabilities"]) == {"blue", "green", "red"}
    stored = torch.load(run.best, weights_only=True)["label_thresholds"]
    assert list(out[0]["thresholds"].values()) == pytest.approx(stored)


def test_evaluate_reports_per_label_figures_as_json_and_files(squares_run, capsys):
    run, _ = squares_run
    assert main(["evaluate", str(run.run_dir), "--json", "--no-progress"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["task_type"] == "multi-label" and found["thresholds_from"] == "validation"
    for key in ("auc", "average_precision", "sensitivity", "specificity", "exact_match",
                "label_accuracy", "loss", "images"):  # fmt: skip
        assert key in found
    assert found["images"] == 48 and found["auc"] > 0.8
    assert set(found["per_label"]) == {"blue", "green", "red"}
    assert set(found["per_label"]["red"]) == {
        "positives", "auc", "average_precision", "threshold", "sensitivity", "specificity"
    }  # fmt: skip
    written = run.run_dir / "eval-labels.csv-test"
    assert {p.name for p in written.iterdir()} >= {"metrics.json", "per_label.csv", "roc.png"}
    report = cnnkit.evaluate(run.run_dir, progress=False)
    assert report.to_dict()["per_label"] == found["per_label"]
    assert main(["evaluate", str(run.run_dir), "--no-progress"]) == 0
    assert "per-label metrics" in capsys.readouterr().out


def test_the_report_page_shows_the_per_label_table(squares_run):
    html = (squares_run[0].run_dir / "report.html").read_text()
    assert "macro ROC AUC" in html and "specificity" in html and "<h2>ROC" in html


def test_unknown_labels_export_and_serve_are_one_line(squares_run, tmp_path, capsys):
    run, listing = squares_run
    bad = listing.parent / "other.csv"
    bad.write_text("path,labels\n0.png,red;purple\n1.png,\n")
    assert main(["evaluate", str(run.run_dir), "--data", str(bad), "--no-progress"]) == 2
    assert "labels the model does not know: purple" in one_line_error(capsys)
    assert main(["export", str(run.run_dir), "--out", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err  # "exporting RUN as onnx ..." and then the one error line
    assert "Traceback" not in err and err.count("error") == 1 and "multi-label" in err
    from cnnkit.serve.app import create_app

    with pytest.raises(CnnkitError, match="multi-label"):
        create_app(run.run_dir)
    assert main(["train", "--data", str(listing), "--sampler", "balanced",
                 "--project", str(tmp_path), "--no-progress"]) == 2  # fmt: skip
    assert "--sampler balanced" in one_line_error(capsys)


def test_a_resumed_multi_label_run_with_mixup_ends_bit_identical(squares_run, tmp_path):
    common = dict(
        data=str(squares_run[1]),
        epochs=2,
        augment="standard",
        mixup=0.2,
        class_weights="auto",
        precision="fp32",
        project=str(tmp_path),
        progress=False,
    )
    full = cnnkit.train(name="full", **common)
    first = cnnkit.train(name="cut", **{**common, "epochs": 1})
    resumed = cnnkit.train(resume=first.run_dir, epochs=2, progress=False)
    a = torch.load(full.last, weights_only=True)
    b = torch.load(resumed.last, weights_only=True)
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert a["label_thresholds"] == b["label_thresholds"]


def test_inspect_counts_images_and_each_labels_positives(tmp_path, capsys):
    for i, image in enumerate(photos(3)):
        image.save(tmp_path / f"{i}.png")
    (tmp_path / "labels.csv").write_text("path,labels\n0.png,a;b\n1.png,b\n2.png,\n")
    assert main(["datasets", "--inspect", str(tmp_path), "--task", "classify", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["multilabel"] and found["totals"] == {"train": 3}
    assert found["images"]["train"] == {"a": 1, "b": 2}
