"""Face recognition end to end on the shared ORL and LFW faces, as a user runs it: align ->
train -> enroll / identify / verify, LFW's pairs, export (the measures on hand-made cases are
in test_faces_measures.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata

import cnnkit
from cnnkit.cli import main
from cnnkit.errors import CnnkitError
from cnnkit.tasks.embed.pairs import (
    ten_fold_accuracy,
)
from face_photos import face_photo

FACES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "faces"
ORL, LFW = FACES / "orl", FACES / "lfw-62"


# ---- end to end ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def face_run(tmp_path_factory):
    """`cnnkit faces align` on 12 ORL people, then a small embedding model trained on them."""
    root = tmp_path_factory.mktemp("faces")
    people = root / "people"
    people.mkdir()
    for i in range(1, 13):
        (people / f"s{i}").symlink_to(ORL / f"s{i}")
    aligned = root / "aligned"
    assert main(["faces", "align", str(people), "--out", str(aligned), "--size", "64"]) == 0
    args = ["train", "--data", str(aligned), "--task", "embed", "--model", "simple_cnn"]
    args += ["--epochs", "3", "--batch-size", "16", "--embedding-dim", "32", "--val-split", "0.25"]
    args += ["--project", str(root / "runs"), "--name", "faces", "--no-progress", "--seed", "1"]
    args += ["--margin-loss", "cosface"]
    assert main(args) == 0
    return root, aligned, root / "runs" / "faces"


def test_align_writes_one_crop_per_photo_and_a_record(face_run):
    _, aligned, _ = face_run
    crops = sorted(aligned.rglob("*.png"))
    assert len(crops) == 120
    assert Image.open(crops[0]).size == (64, 64)
    record = json.loads((aligned / "cnnkit-faces.json").read_text())
    assert record["detector"] == "mtcnn" and record["size"] == 64


def test_a_second_align_into_the_same_folder_adds_people_at_the_same_size_only(
    face_run, tmp_path, capsys
):
    _, aligned, _ = face_run
    copy = tmp_path / "aligned"
    shutil.copytree(aligned, copy)
    more = tmp_path / "more"
    more.mkdir()
    (more / "s13").symlink_to(ORL / "s13")
    assert main(["faces", "align", str(more), "--out", str(copy), "--size", "32"]) != 0
    assert "already holds faces aligned at 64 px" in capsys.readouterr().err
    assert not (copy / "s13").exists()
    assert main(["faces", "align", str(more), "--out", str(copy), "--size", "64"]) == 0
    assert len(list((copy / "s13").glob("*.png"))) == 10 and len(list(copy.iterdir())) == 14
    # another photo folder's person named as one already there would merge two people
    other = tmp_path / "other"
    other.mkdir()
    (other / "s1").symlink_to(ORL / "s20")
    capsys.readouterr()
    assert main(["faces", "align", str(other), "--out", str(copy), "--size", "64"]) == 2
    assert "already holds a person 's1'" in capsys.readouterr().err
    assert len(list((copy / "s1").glob("*.png"))) == 10  # untouched


def test_the_checkpoint_holds_the_threshold_and_the_alignment(face_run):
    _, _, run = face_run
    ckpt = torch.load(run / "best.pt", weights_only=True)
    assert ckpt["task"] == "embed" and ckpt["embedding_dim"] == 32
    assert ckpt["face_align"] == {"detector": "mtcnn", "size": 64}
    assert -1.0 < ckpt["threshold"] < 1.0
    assert len(ckpt["classes"]) == 9  # 3 of the 12 people held out for validation
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["validation"] == "people" and metrics["best_by"] == "val_pair_accuracy"
    history = (run / "history.csv").read_text().splitlines()
    assert "val_pair_accuracy" in history[0] and len(history) == 4


def test_embeddings_are_unit_vectors_and_the_same_image_matches_itself(face_run):
    _, _, run = face_run
    embedder = cnnkit.load(run)
    photo = str(ORL / "s20" / "1.pgm")  # a person the model never saw
    result = embedder.embed([photo, photo, str(ORL / "s21" / "1.pgm")])
    assert result.embeddings.shape == (3, 32)
    assert np.allclose(np.linalg.norm(result.embeddings, axis=1), 1.0, atol=1e-5)
    assert float(result.embeddings[0] @ result.embeddings[1]) == pytest.approx(1.0, abs=1e-5)
    check = embedder.verify(photo, photo)
    assert check.same and check.score == pytest.approx(1.0, abs=1e-5)


def test_enroll_identify_and_verify_unseen_people(face_run, tmp_path, capsys):
    root, _, run = face_run
    gallery, probes = tmp_path / "gallery", tmp_path / "probes"
    for i in range(20, 26):  # people the model never trained on
        (gallery / f"s{i}").mkdir(parents=True)
        (probes / f"s{i}").mkdir(parents=True)
        for j in range(1, 11):
            target = (gallery if j <= 5 else probes) / f"s{i}" / f"{j}.pgm"
            target.symlink_to(ORL / f"s{i}" / f"{j}.pgm")
    npz = tmp_path / "gallery.npz"
    assert main(["faces", "enroll", str(run), str(gallery), "--out", str(npz)]) == 0
    assert "enrolled 6 people (30 photos)" in capsys.readouterr().out

    coffee = tmp_path / "coffee.png"
    Image.fromarray(skdata.coffee()).save(coffee)
    args = ["faces", "identify", str(run), str(probes), str(coffee), "--gallery", str(npz)]
    assert main([*args, "--json", "--threshold", "-1"]) == 0
    found = {
        Path(r["source"]).parent.name + "/" + Path(r["source"]).name: r
        for r in json.loads(capsys.readouterr().out)
    }
    assert found[f"{tmp_path.name}/coffee.png"]["name"] is None
    named = [r for r in found.values() if r["name"] is not None]
    assert len(named) == 30
    right = sum(r["name"] == Path(r["source"]).parent.name for r in named)
    assert right >= 18, right  # rank-1 over 6 unseen people (chance: 5 of 30)

    assert (
        main(
            ["faces", "verify", str(run), str(ORL / "s20/1.pgm"), str(ORL / "s20/2.pgm"), "--json"]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"first", "second", "score", "threshold", "same", "several_faces"}
    assert out["several_faces"] == []


def test_a_photo_of_several_faces_is_embedded_by_its_largest_and_named(face_run, tmp_path, capsys):
    _, _, run = face_run
    two = face_photo(tmp_path / "p" / "two.png", big_left=False)
    big = face_photo(tmp_path / "p" / "big.png", big_left=False, faces=("big",))
    small = face_photo(tmp_path / "small.png", big_left=False, faces=("small",))
    note = f"cnnkit: 1 photo(s) showed several faces; the largest face of each was used: {two}"
    scores = {}
    for other in (big, small):
        assert main(["faces", "verify", str(run), str(two), str(other), "--json"]) == 0
        captured = capsys.readouterr()
        assert captured.err.strip() == note
        scores[other] = json.loads(captured.out)["score"]
    assert scores[big] > 0.99 and scores[big] > scores[small]  # the large face was embedded
    npz = tmp_path / "g.npz"
    for argv in (
        ["enroll", str(run), str(tmp_path), "--out", str(npz)],
        ["identify", str(run), str(two), "--gallery", str(npz)],
    ):
        assert main(["faces", *argv]) == 0
        assert capsys.readouterr().err.strip() == note, argv
    # arrays of one size share a name: the photo is marked by its place, not its name
    from cnnkit.faces.gallery import Gallery, identify

    arrays = [np.array(Image.open(p)) for p in (big, two, big)]
    found, _ = identify(cnnkit.load(run), Gallery.load(npz), arrays)
    assert [f.several_faces for f in found] == [False, True, False]
    assert [f.to_dict()["several_faces"] for f in found] == [False, True, False]
    # a pairs file's photos: the same line, and the count in the report
    root = tmp_path / "root"
    face_photo(root / "Jo" / "Jo_0001.png", big_left=True)
    face_photo(root / "Jo" / "Jo_0002.png", big_left=True, faces=("big",))
    (tmp_path / "pairs.txt").write_text("Jo\t1\t2\n")
    args = ["verify", str(run), "--pairs", str(tmp_path / "pairs.txt"), "--root", str(root)]
    assert main(["faces", *args, "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["several_faces"] == 1
    assert captured.err.strip() == note.replace(str(two), str(root / "Jo" / "Jo_0001.png"))


def test_lfw_pairs_are_verified_with_ten_folds_and_a_roc(face_run, tmp_path, capsys):
    _, _, run = face_run
    names = sorted(p.name for p in LFW.iterdir())[:6]
    lines = [f"{n}\t{a}\t{b}" for n in names for a, b in ((1, 2), (3, 4))]
    lines += [f"{names[i]}\t{i + 1}\t{names[(i + 1) % 6]}\t{i + 2}" for i in range(6)]
    lines += [f"{names[i]}\t5\t{names[(i + 2) % 6]}\t6" for i in range(6)]
    (tmp_path / "pairs.txt").write_text("\n".join(lines) + "\n")
    roc = tmp_path / "roc.png"
    args = ["faces", "verify", str(run), "--pairs", str(tmp_path / "pairs.txt"), "--root", str(LFW)]
    assert main([*args, "--roc", str(roc), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["pairs"] == 24 and report["same_pairs"] == 12
    assert 0.0 <= report["accuracy"] <= 1.0 and 0.0 <= report["auc"] <= 1.0
    assert Image.open(roc).size[0] > 100
    # --threshold sets the one the accuracy is measured at: -1 calls every pair "same"
    assert main([*args, "--threshold", "-1", "--json"]) == 0
    given = json.loads(capsys.readouterr().out)
    assert given["threshold"] == -1.0 and given["accuracy_at_threshold"] == 0.5
    assert given["accuracy"] == report["accuracy"]  # the folds choose their own
    assert main([*args, "--threshold", "1.5"]) == 2
    err = capsys.readouterr().err
    assert "cosine similarity from -1 to 1, got 1.5" in err and len(err.splitlines()) == 1


def test_pairs_naming_one_person_twice_are_one_person_and_a_wrong_header_is_said(
    face_run, tmp_path, capsys
):
    _, _, run = face_run
    names = sorted(p.name for p in LFW.iterdir())[:4]
    lines = ["10 3"]  # promises 10 folds of 6 pairs: the file holds 8
    lines += [f"{n} 1 {n} 2" for n in names]  # the four-field form, one person each
    lines += [f"{names[i]} 3 {names[(i + 1) % 4]} 4" for i in range(4)]
    (tmp_path / "pairs.txt").write_text("\n".join(lines) + "\n")
    args = ["faces", "verify", str(run), "--pairs", str(tmp_path / "pairs.txt"), "--root", str(LFW)]
    assert main([*args, "--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["pairs"] == 8 and report["same_pairs"] == 4 and report["folds"] == "stratified"
    assert "promises 10 fold(s) of 6 pairs, but it holds 8 pairs" in " ".join(captured.err.split())


def test_evaluate_writes_its_report_beside_the_checkpoint(face_run, capsys):
    _, aligned, run = face_run
    assert main(["evaluate", str(run)]) == 0
    out = capsys.readouterr().out
    folders = list(run.glob("eval-*"))
    assert len(folders) == 1 and f"reports written to {folders[0]}" in " ".join(out.split())
    metrics = json.loads((folders[0] / "metrics.json").read_text())
    assert metrics["pairs"] > 0 and 0.0 <= metrics["auc"] <= 1.0
    assert (folders[0] / "roc.png").is_file()


def test_a_gallery_from_another_model_is_refused(face_run, tmp_path, capsys):
    _, _, run = face_run
    gallery = tmp_path / "g"
    (gallery / "s20").mkdir(parents=True)
    (gallery / "s20" / "1.pgm").symlink_to(ORL / "s20" / "1.pgm")
    npz = tmp_path / "g.npz"
    assert main(["faces", "enroll", str(run), str(gallery), "--out", str(npz)]) == 0
    other = tmp_path / "other.pt"
    ckpt = torch.load(run / "best.pt", weights_only=True)
    ckpt["state_dict"] = {
        k: v + 0.01 if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()
    }
    torch.save(ckpt, other)
    capsys.readouterr()
    rc = main(["faces", "identify", str(other), str(ORL / "s20/2.pgm"), "--gallery", str(npz)])
    assert rc == 2
    assert "enrolled with another model" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["verify", "{run}", "{coffee}", "{face}"], "no face found"),
        (["verify", "{run}", "{face}"], "give two images"),
        (["verify", "{run}", "--pairs", "{coffee}"], "--pairs needs --root"),
        (["identify", "{run}", "{face}", "--gallery", "{coffee}"], "not a cnnkit face gallery"),
        (["identify", "{run}", "{face}", "--gallery", "{empty}"], "not a cnnkit face gallery"),
        (["enroll", "{run}", "{face}", "--out", "g.npz"], "gallery folder not found"),
        (["enroll", "{run}", "{face}", "--out", "g.txt"], "a gallery is an .npz file"),
        (["align", "{face}", "--out", "x"], "folder not found"),
    ],
)
def test_bad_input_is_one_line(face_run, tmp_path, capsys, args, expected):
    _, _, run = face_run
    coffee = tmp_path / "coffee.png"
    Image.fromarray(skdata.coffee()).save(coffee)
    (tmp_path / "empty.npz").write_bytes(b"")
    values = {"run": str(run), "coffee": str(coffee), "face": str(ORL / "s20" / "1.pgm")}
    values["empty"] = str(tmp_path / "empty.npz")
    assert main(["faces", *[a.format(**values) for a in args]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err


def test_a_classifier_is_not_a_face_model(cls_run, capsys):
    assert main(["faces", "verify", str(cls_run.run_dir), "a.png", "b.png"]) == 2
    assert "face commands need an embedding model" in capsys.readouterr().err


def test_mixup_is_refused_for_embeddings(tmp_path, capsys):
    args = ["train", "--data", str(ORL), "--task", "embed", "--mixup", "0.2", "--epochs", "1"]
    assert main([*args, "--project", str(tmp_path)]) == 2
    assert "margin loss needs whole" in capsys.readouterr().err


def test_an_exported_embedding_model_answers_as_its_checkpoint(face_run, tmp_path, capsys):
    """ONNX through onnxruntime: the same embeddings (fp32 both), the same threshold, and a
    gallery enrolled with the run identifies with the file (same checkpoint sha256)."""
    _, _, run = face_run
    onnx = tmp_path / "faces.onnx"
    assert main(["export", str(run), "--out", str(onnx), "--dynamic-batch"]) == 0
    assert "lowest cosine" in capsys.readouterr().out
    ours, theirs = cnnkit.load(run, precision="fp32"), cnnkit.load(onnx)
    photos = [str(ORL / "s22" / f"{j}.pgm") for j in (1, 2, 3)]
    a, b = ours.embed(photos).embeddings, theirs.embed(photos).embeddings
    assert np.abs(a - b).max() < 1e-4
    assert theirs.threshold == ours.threshold and theirs.align == ours.align

    gallery = tmp_path / "g"
    (gallery / "s22").mkdir(parents=True)
    (gallery / "s22" / "1.pgm").symlink_to(ORL / "s22" / "1.pgm")
    npz = tmp_path / "g.npz"
    assert main(["faces", "enroll", str(run), str(gallery), "--out", str(npz)]) == 0
    capsys.readouterr()
    assert main(["faces", "identify", str(onnx), photos[1], "--gallery", str(npz), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["nearest"] == "s22"


def test_too_few_pairs_for_folds_give_no_fold_accuracy_not_a_crash():
    scores, same = np.array([0.9, 0.2, 0.8]), np.array([True, False, True])
    mean, std = ten_fold_accuracy(scores, same)
    assert np.isnan(mean) and np.isnan(std)
    assert ten_fold_accuracy(np.r_[scores, 0.1], np.r_[same, False])[0] == 1.0  # 2 folds


def test_an_embedding_models_int8_export_is_kept_only_when_its_embeddings_agree(face_run, tmp_path):
    """onnxruntime's quantiser runs on the embedding graph (its symbolic shape inference once
    failed on the normalisation's Expand); whether the file is kept, the report, the file and
    the lowest cosine say the same thing."""
    from cnnkit.export import export_model

    _, aligned, run = face_run
    out = tmp_path / "f.int8.onnx"
    try:
        export_model(run, "onnx", out, int8=True, images=[str(aligned)])
        refused = False
    except CnnkitError as exc:
        refused = True
        assert "parity check failed" in str(exc) and "lowest cosine" in str(exc)
    parity = json.loads((tmp_path / "export_report.json").read_text())["f.int8.onnx"]["parity"]
    assert parity["passed"] is (not refused) and out.exists() is (not refused)
    assert (parity["min_cosine"] >= 0.98) is (not refused)
    assert parity["min_cosine"] <= parity["mean_cosine"] <= 1.0 + 1e-6


def test_one_photo_per_person_says_no_threshold_can_be_chosen(face_run, tmp_path, capsys):
    _, aligned, _ = face_run
    one = tmp_path / "one"
    for person in sorted(p for p in aligned.iterdir() if p.is_dir())[:8]:
        (one / person.name).mkdir(parents=True)
        shutil.copy(sorted(person.glob("*.png"))[0], one / person.name)
    args = ["train", "--data", str(one), "--task", "embed", "--model", "simple_cnn"]
    args += ["--epochs", "1", "--batch-size", "4", "--embedding-dim", "8", "--val-split", "0.25"]
    assert main([*args, "--project", str(tmp_path / "runs"), "--no-progress"]) == 0
    assert "no validation person has two images" in capsys.readouterr().out
    capsys.readouterr()
    assert main([*args[:2], str(aligned), *args[3:], "--project", str(tmp_path / "r2"),
                 "--no-progress"]) == 0  # fmt: skip
    assert "no validation person has two images" not in capsys.readouterr().out
