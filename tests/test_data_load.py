"""load_data end to end: corrupt files, dataset size, the decode cache, names and the sample."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnkit.data import list_datasets, load_data
from cnnkit.errors import CnnkitError
from image_files import make_split, write_image

CIFAR10_CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]


def load(spec, tmp_path, **kw):
    kw.setdefault("cache_dir", tmp_path / "cache")
    return load_data(spec, progress=False, **kw)


def test_corrupt_files_skipped_and_listed_once(tmp_path, capsys):
    root = tmp_path / "ds"
    make_split(root / "train", {"a": 3, "b": 3})
    png = (root / "train" / "a" / "000.png").read_bytes()
    (root / "train" / "a" / "cut.png").write_bytes(png[: len(png) // 2])
    (root / "train" / "b" / "empty.png").write_bytes(b"")
    (root / "train" / "b" / "text.jpg").write_text("not a picture")
    d = load(root, tmp_path, val_split=0)
    assert len(d.train) == 6
    reasons = {Path(p).name: r for p, r in d.skipped}
    assert reasons == {
        "cut.png": "truncated PNG",
        "empty.png": "zero-byte file",
        "text.jpg": "not an image",
    }
    err = capsys.readouterr().err
    assert err.count("cnnkit: skipped 3 unreadable images (first: ") == 1
    assert f"{root / 'train' / 'a' / 'cut.png'}: truncated PNG" in err
    again = load(root, tmp_path, val_split=0)  # from the cache: same report
    assert again.skipped == d.skipped
    assert "skipped 3 unreadable images" in capsys.readouterr().err


def test_split_with_only_unreadable_files_is_an_error(tmp_path):
    make_split(tmp_path / "ds" / "train", {"a": 2})
    (tmp_path / "ds" / "test" / "a").mkdir(parents=True)
    (tmp_path / "ds" / "test" / "a" / "x.png").write_bytes(b"")
    with pytest.raises(CnnkitError, match=r"every image in test/ is unreadable"):
        load(tmp_path / "ds", tmp_path)


def test_most_common_size_and_explicit_size(tmp_path):
    root = tmp_path / "ds"
    make_split(root, {"a": 3})
    write_image(root / "b" / "big.png", 200, size=(16, 24))
    d = load(root, tmp_path, val_split=0)
    assert d.train.images.shape == (4, 3, 8, 8)
    assert d.train.images[3, 0].float().mean().item() == pytest.approx(200, abs=1)
    d = load(root, tmp_path, val_split=0, image_size=(12, 10), resize="pad")
    assert d.train.images.shape == (4, 3, 12, 10)
    d = load(root, tmp_path, val_split=0, image_size=5)
    assert d.train.images.shape == (4, 3, 5, 5)


def cache_entries(cache_dir: Path) -> set[str]:
    return {p.name for p in cache_dir.glob("*.json")}


def test_cache_entry_is_written_and_reused(tmp_path):
    root = tmp_path / "ds"
    make_split(root, {"a": 2, "b": 2})
    cache_dir = tmp_path / "cache"
    first = load(root, tmp_path, val_split=0)
    entries = cache_entries(cache_dir)
    assert len(entries) == 1
    key = next(iter(entries))[: -len(".json")]
    assert (cache_dir / f"{key}.images.npy").is_file()
    assert (cache_dir / f"{key}.labels.npy").is_file()
    assert not list(cache_dir.glob("*.tmp"))
    # Prove the second load reads the cache instead of decoding: mark the cached pixels.
    cached = np.load(cache_dir / f"{key}.images.npy")
    cached[:, 2] = 77
    np.save(cache_dir / f"{key}.images.npy", cached)
    second = load(root, tmp_path, val_split=0)
    assert (second.train.images[:, 2] == 77).all()
    assert (first.train.images[:, 2] == 0).all()
    assert cache_entries(cache_dir) == entries


def test_changed_added_removed_files_invalidate_the_cache(tmp_path):
    root = tmp_path / "ds"
    make_split(root, {"a": 2, "b": 2})
    cache_dir = tmp_path / "cache"
    before = load(root, tmp_path, val_split=0)
    target = root / "a" / "000.png"
    assert before.train.images[0, 0, 0, 0].item() == 0
    write_image(target, 123)
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))  # coarse-mtime safety
    changed = load(root, tmp_path, val_split=0)
    assert changed.train.images[0, 0, 0, 0].item() == 123
    write_image(root / "b" / "new.png", 9)
    assert len(load(root, tmp_path, val_split=0).train) == 5
    (root / "b" / "new.png").unlink()
    (root / "b" / "000.png").unlink()
    assert len(load(root, tmp_path, val_split=0).train) == 3
    assert len(cache_entries(cache_dir)) == 4


def test_unwritable_cache_dir_warns_and_loads(tmp_path, capsys):
    make_split(tmp_path / "ds", {"a": 2})
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    d = load(tmp_path / "ds", tmp_path, val_split=0, cache_dir=blocker / "cache")
    assert len(d.train) == 2
    assert "continuing without caching" in capsys.readouterr().err


def test_named_dataset_offline_message(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNKIT_OFFLINE", "1")
    with pytest.raises(CnnkitError) as info:
        load("cifar10", tmp_path, data_root=tmp_path / "data")
    msg = str(info.value)
    assert "\n" not in msg
    assert "cifar-10-python.tar.gz" in msg and str(tmp_path / "data") in msg
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in msg
    with pytest.raises(CnnkitError) as info:
        load("mnist", tmp_path, data_root=tmp_path / "data")
    msg = str(info.value)
    assert "train-images-idx3-ubyte.gz" in msg and "t10k-labels-idx1-ubyte.gz" in msg
    assert str(tmp_path / "data" / "MNIST" / "raw") in msg


def test_unknown_name_and_missing_path(tmp_path):
    with pytest.raises(CnnkitError, match="unknown dataset 'cifar1'; did you mean 'cifar10'"):
        load("cifar1", tmp_path)
    with pytest.raises(CnnkitError, match="data path not found: "):
        load(str(tmp_path / "nowhere"), tmp_path)
    (tmp_path / "x.txt").write_text("")
    with pytest.raises(CnnkitError, match="neither a .csv list of images nor an .npz; a face"):
        load(tmp_path / "x.txt", tmp_path)  # LFW's pairs.txt, perhaps: faces verify says so


def test_bad_arguments(tmp_path):
    with pytest.raises(CnnkitError, match="did you mean 'crop'"):
        load("cifar10-sample", tmp_path, resize="crpo")
    with pytest.raises(CnnkitError, match="val_split"):
        load("cifar10-sample", tmp_path, val_split=1.0)
    with pytest.raises(CnnkitError, match="did you mean 'test'"):
        load("cifar10-sample", tmp_path, splits=("tset",))


def test_list_datasets():
    names = dict(list_datasets())
    assert {"cifar10", "cifar100", "mnist", "fashion-mnist", "cifar10-sample"} <= set(names)
    assert all(isinstance(v, str) and v and "\n" not in v for v in names.values())


def test_bundled_sample(tmp_path):
    d = load("cifar10-sample", tmp_path)
    assert d.classes == CIFAR10_CLASSES
    assert len(d.train) + len(d.val) == 2000 and len(d.val) == 200 and len(d.test) == 500
    assert d.val_source == "split" and d.skipped == []
    assert d.train.images.shape[1:] == (3, 32, 32) and d.train.images.is_contiguous()
    assert np.bincount(d.test.labels.numpy()).tolist() == [50] * 10
    # The sample is a byte copy of the real files: pixels equal a direct decode.
    first = d.test.paths[0]
    assert np.array_equal(d.test.images[0].permute(1, 2, 0).numpy(), np.asarray(Image.open(first)))


@pytest.mark.shared_data
def test_full_cifar10_twice_uses_the_cache(shared_cifar10):
    """First run decodes 60,000 PNGs (~30 s on 2 cores) into the default cache; later runs hit."""
    load_data(shared_cifar10, progress=False)
    start = time.perf_counter()
    d = load_data(shared_cifar10, progress=False)
    elapsed = time.perf_counter() - start
    assert d.classes == CIFAR10_CLASSES
    assert len(d.train) + len(d.val) == 50000 and len(d.val) == 5000 and len(d.test) == 10000
    assert d.skipped == []
    assert elapsed < 10, f"cached load took {elapsed:.1f} s"


def write_idx(path: Path, array: np.ndarray) -> None:
    """An uncompressed MNIST idx file (ubyte), as torchvision reads from <root>/MNIST/raw/."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_named_mnist_from_local_files(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNKIT_OFFLINE", "1")
    raw = tmp_path / "data" / "MNIST" / "raw"
    rng = np.random.default_rng(0)
    train_x = rng.integers(0, 256, (20, 28, 28), dtype=np.uint8)
    write_idx(raw / "train-images-idx3-ubyte", train_x)
    write_idx(raw / "train-labels-idx1-ubyte", np.arange(20) % 2)
    write_idx(raw / "t10k-images-idx3-ubyte", rng.integers(0, 256, (4, 28, 28), dtype=np.uint8))
    write_idx(raw / "t10k-labels-idx1-ubyte", np.array([0, 1, 1, 0]))
    d = load("mnist", tmp_path, data_root=tmp_path / "data", val_split=0.2)
    assert d.classes[:2] == ["0 - zero", "1 - one"] and len(d.classes) == 10
    assert (len(d.train), len(d.val), len(d.test)) == (16, 4, 4) and d.val_source == "split"
    assert d.train.images.shape == (16, 3, 28, 28) and d.train.images.is_contiguous()
    assert (d.train.images[:, 0] == d.train.images[:, 2]).all()  # grey repeated to RGB
    full = load("mnist", tmp_path, data_root=tmp_path / "data", val_split=0, image_size=14)
    assert full.val_source == "test" and full.train.images.shape == (20, 3, 14, 14)
    assert np.array_equal(
        load("mnist", tmp_path, data_root=tmp_path / "data", val_split=0)
        .train.images[:, 0]
        .numpy(),
        train_x,
    )
