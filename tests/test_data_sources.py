"""Folder and CSV datasets: layouts, class mapping, validation splits and layout errors."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from cnnkit.data import load_data, stratified_split
from cnnkit.errors import CnnkitError
from image_files import make_split, write_image


def load(spec, tmp_path, **kw):
    kw.setdefault("cache_dir", tmp_path / "cache")
    return load_data(spec, progress=False, **kw)


def test_train_val_test_folders(tmp_path):
    root = tmp_path / "ds"
    make_split(root / "train", {"dog": 4, "cat": 3})
    make_split(root / "val", {"dog": 2, "cat": 1})
    make_split(root / "test", {"cat": 2})  # a subset of the classes is fine
    d = load(root, tmp_path)
    assert d.classes == ["cat", "dog"]
    assert d.val_source == "folder"
    assert (len(d.train), len(d.val), len(d.test)) == (7, 3, 2)
    assert d.train.images.shape == (7, 3, 8, 8) and d.train.images.dtype.is_floating_point is False
    assert d.train.labels.tolist() == [0, 0, 0, 1, 1, 1, 1]
    red = d.train.images[:, 0, 0, 0].tolist()
    assert red == [0, 1, 2, 50, 51, 52, 53]  # labels match the folders
    assert d.train.paths[0].endswith("train/cat/000.png")
    assert d.test.labels.tolist() == [0, 0]
    assert d.name == str(root) and d.skipped == []


@pytest.mark.parametrize("alias", ["valid", "validation"])
def test_val_folder_aliases(tmp_path, alias):
    make_split(tmp_path / "ds" / "train", {"a": 2, "b": 2})
    make_split(tmp_path / "ds" / alias, {"a": 1})
    d = load(tmp_path / "ds", tmp_path)
    assert d.val_source == "folder" and len(d.val) == 1 and len(d.train) == 4 and d.test is None


def test_single_folder_stratified_seeded_split(tmp_path):
    make_split(tmp_path / "ds", {"a": 20, "b": 10, "c": 3, "d": 1})
    d = load(tmp_path / "ds", tmp_path, val_split=0.2, seed=1)
    assert d.val_source == "split" and d.test is None
    assert Counter(d.val.labels.tolist()) == {0: 4, 1: 2, 2: 1}  # round(n*0.2), >= 1 if n >= 2
    assert len(d.train) + len(d.val) == 34
    assert not set(d.train.paths) & set(d.val.paths)
    again = load(tmp_path / "ds", tmp_path, val_split=0.2, seed=1)
    assert again.val.paths == d.val.paths
    other = load(tmp_path / "ds", tmp_path, val_split=0.2, seed=2)
    assert other.val.paths != d.val.paths


def test_stratified_split_function():
    labels = np.repeat(np.arange(3), [10, 5, 1])
    tr, va = stratified_split(labels, 0.5, seed=0)
    assert Counter(labels[va].tolist()) == {0: 5, 1: 2}  # round(2.5) == 2 (banker's)
    assert sorted(np.concatenate([tr, va]).tolist()) == list(range(16))
    tr2, va2 = stratified_split(labels, 0.5, seed=0)
    assert (va == va2).all() and (tr == tr2).all()


def test_val_from_test_when_val_split_is_zero(tmp_path):
    make_split(tmp_path / "ds" / "train", {"a": 2, "b": 2})
    make_split(tmp_path / "ds" / "test", {"a": 1, "b": 1})
    d = load(tmp_path / "ds", tmp_path, val_split=0)
    assert d.val_source == "test" and len(d.train) == 4 and len(d.val) == 2 and len(d.test) == 2
    d = load(tmp_path / "ds" / "train", tmp_path, val_split=0)
    assert d.val_source == "none" and d.val is None


def test_only_requested_splits(tmp_path):
    make_split(tmp_path / "ds" / "train", {"a": 4, "b": 4})
    make_split(tmp_path / "ds" / "test", {"a": 1, "b": 1})
    d = load(tmp_path / "ds", tmp_path, splits=("test",))
    assert d.train is None and d.val is None and len(d.test) == 2 and d.classes == ["a", "b"]


def test_other_and_hidden_files_ignored(tmp_path):
    make_split(tmp_path / "ds", {"a": 2, "b": 1})
    (tmp_path / "ds" / "a" / "notes.txt").write_text("hi")
    write_image(tmp_path / "ds" / "a" / ".hidden.png", 7)
    write_image(tmp_path / "ds" / ".thumbs" / "x.png", 7)
    write_image(tmp_path / "ds" / "b" / "sub" / "UPPER.PNG", 9)  # nested, upper-case extension
    d = load(tmp_path / "ds", tmp_path, val_split=0)
    assert d.classes == ["a", "b"] and len(d.train) == 4


def test_empty_class_folder_error(tmp_path):
    make_split(tmp_path / "ds" / "train", {"a": 2})
    (tmp_path / "ds" / "train" / "empty").mkdir()
    with pytest.raises(CnnkitError, match=r"train/empty has no images"):
        load(tmp_path / "ds", tmp_path)


def test_unknown_class_in_test_error(tmp_path):
    make_split(tmp_path / "ds" / "train", {"a": 2, "b": 2})
    make_split(tmp_path / "ds" / "test", {"zebra": 1})
    with pytest.raises(CnnkitError, match="'zebra' in test/ is not a training class"):
        load(tmp_path / "ds", tmp_path)


def test_no_class_folders_error(tmp_path):
    write_image(tmp_path / "flat" / "x.png", 1)
    with pytest.raises(CnnkitError, match=r"no class folders.*ROOT/train/<class>"):
        load(tmp_path / "flat", tmp_path)


def write_csv_dataset(tmp_path: Path, header: bool, split_column: bool) -> Path:
    rows = []
    for i in range(6):
        label = "dog" if i % 2 else "cat"
        rel = f"img/{i}.png"
        write_image(tmp_path / rel, i)
        split = ("train", "train", "train", "train", "val", "test")[i]
        rows.append(f"{rel},{label}" + (f",{split}" if split_column else ""))
    if header:
        rows.insert(0, "path,label" + (",split" if split_column else ""))
    csv_path = tmp_path / "list.csv"
    csv_path.write_text("\n".join(rows) + "\n")
    return csv_path


@pytest.mark.parametrize("header", [True, False])
def test_csv_without_split_column(tmp_path, header):
    csv_path = write_csv_dataset(tmp_path, header=header, split_column=False)
    d = load(csv_path, tmp_path, val_split=0.34)
    assert d.classes == ["cat", "dog"] and d.val_source == "split" and d.test is None
    assert len(d.train) + len(d.val) == 6 and Counter(d.val.labels.tolist()) == {0: 1, 1: 1}


@pytest.mark.parametrize("header", ["path,class", "filename,category", "Image,Label", "file,y"])
def test_csv_headers_by_other_common_names_are_headers(tmp_path, header):
    csv_path = write_csv_dataset(tmp_path, header=False, split_column=False)
    csv_path.write_text(f"{header}\n" + csv_path.read_text())
    d = load(csv_path, tmp_path, val_split=0)
    assert d.classes == ["cat", "dog"] and len(d.train) == 6 and d.skipped == []


def test_a_first_row_that_names_an_image_is_data_even_with_a_header_like_label(tmp_path):
    for name in ("a.png", "b.png", "c.png", "d.png"):
        write_image(tmp_path / name, 1)
    (tmp_path / "yes_no.csv").write_text("a.png,y\nb.png,n\nc.png,y\nd.png,n\n")
    assert len(load(tmp_path / "yes_no.csv", tmp_path, val_split=0).train) == 4
    (tmp_path / "image").write_bytes((tmp_path / "b.png").read_bytes())  # no suffix
    (tmp_path / "named.csv").write_text("image,class\na.png,class\n")
    d = load(tmp_path / "named.csv", tmp_path, val_split=0)
    assert len(d.train) == 2 and d.classes == ["class"]


def test_csv_with_split_column(tmp_path):
    csv_path = write_csv_dataset(tmp_path, header=True, split_column=True)
    d = load(csv_path, tmp_path)
    assert d.val_source == "folder"
    assert (len(d.train), len(d.val), len(d.test)) == (4, 1, 1)
    assert d.val.images[0, 0, 0, 0].item() == 4 and d.test.labels.tolist() == [1]


def test_csv_bad_split_value(tmp_path):
    write_image(tmp_path / "a.png", 1)
    (tmp_path / "l.csv").write_text("a.png,cat,holdout\n")
    with pytest.raises(CnnkitError, match="line 1: unknown split 'holdout'"):
        load(tmp_path / "l.csv", tmp_path)


def test_csv_missing_file_is_skipped(tmp_path, capsys):
    write_image(tmp_path / "a.png", 1)
    write_image(tmp_path / "b.png", 2)
    (tmp_path / "l.csv").write_text("a.png,cat\nb.png,cat\ngone.png,dog\n")
    d = load(tmp_path / "l.csv", tmp_path, val_split=0)
    assert len(d.train) == 2 and d.classes == ["cat", "dog"]
    assert d.skipped == [(str(tmp_path / "gone.png"), "file not found")]
    assert "skipped 1 unreadable image" in capsys.readouterr().err


def test_a_symbolic_link_loop_is_a_skipped_file_not_a_traceback(tmp_path, capsys):
    from cnnkit.cli import main

    root = tmp_path / "ds"
    make_split(root / "train", {"dog": 3, "cat": 3})
    loop = root / "train" / "dog" / "loop.png"
    loop.symlink_to(loop)  # points at itself: ELOOP on every stat
    d = load(root, tmp_path, val_split=0.0)
    assert len(d.train) == 6
    assert [(Path(p).name, reason) for p, reason in d.skipped] == [
        ("loop.png", "cannot be read (Too many levels of symbolic links)")
    ]
    # named among other files, or inside a folder, `predict` reports it and predicts the rest
    import cnnkit

    run = cnnkit.train(
        data=str(root), model="simple_cnn", epochs=1, image_size=32, val_split=0.0,
        project=str(tmp_path / "runs"), name="r", progress=False,
    )  # fmt: skip
    capsys.readouterr()
    good = str(root / "train" / "cat" / "000.png")
    for given in ([good, str(loop)], [str(root / "train" / "dog")]):
        assert main(["predict", str(run.run_dir), *given, "--json"]) == 0
        captured = capsys.readouterr()
        assert f"skipped {loop}: cannot be read" in captured.err
        assert "Traceback" not in captured.err


def test_a_dataset_root_given_to_predict_is_its_photos_not_its_masks(tmp_path, capsys):
    from cnnkit.inputs import expand_paths

    root = tmp_path / "pf"
    for stem in ("a", "b"):
        write_image(root / "PNGImages" / f"{stem}.png", 1)
        write_image(root / "PedMasks" / f"{stem}_mask.png", 0)
    write_image(root / "extra" / "c_mask.png", 0)  # not the layout's masks: a photo
    assert expand_paths([str(root)]) == [
        root / "PNGImages" / "a.png",
        root / "PNGImages" / "b.png",
        root / "extra" / "c_mask.png",
    ]
    assert "left out the 2 mask file(s) of the dataset" in capsys.readouterr().err
    photos = tmp_path / "photos"  # no dataset layout: every image is a photo, whatever its name
    for name in ("cat.png", "ski_mask.png", "masks/venetian.png"):
        write_image(photos / name, 3)
    assert len(expand_paths([str(photos)])) == 3 and capsys.readouterr().err == ""
    masks = expand_paths([str(root / "PedMasks")])  # asked for by name: predicted as photos
    assert [p.name for p in masks] == ["a_mask.png", "b_mask.png"]
    assert expand_paths([str(root / "PedMasks" / "a_mask.png")]) == [
        root / "PedMasks" / "a_mask.png"
    ]
