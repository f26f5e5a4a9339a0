"""Streaming training data (--stream): folders and tar shards decoded on the fly, split by rank
and worker, resumable, and robust to unreadable files."""

from __future__ import annotations

import io
import json
import shutil
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

import cnnkit
from cnnkit.cli import main
from cnnkit.data.budget import check_budget, memory_budget
from cnnkit.data.shards import write_shards
from cnnkit.data.sources import scan_folder
from cnnkit.data.stream import StreamEpoch, materialise, stream_steps
from cnnkit.data.stream_splits import list_source, plan_stream, shard_sources
from cnnkit.errors import CnnkitError

CLASSES = ("airplane", "cat", "ship")


def copy_cifar(src: Path, dst: Path, train: int = 24, test: int = 6) -> Path:
    """A small real folder: the first `train` / `test` CIFAR-10 PNGs of three classes."""
    for split, n in (("train", train), ("test", test)):
        for name in CLASSES:
            (dst / split / name).mkdir(parents=True)
            for f in sorted((src / split / name).iterdir())[:n]:
                shutil.copy(f, dst / split / name / f.name)
    return dst


def bomb_png() -> bytes:
    """A PNG whose header claims 100,000 x 100,000 pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\x00" * 3_000_001)  # the first row; the rest would be zeros too
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def add_bad_files(folder: Path) -> list[str]:
    """Hostile files with image names: truncated PNG and JPEG, zero bytes, text, a bomb."""
    good = next((folder / "cat").iterdir()).read_bytes()
    bad = {
        "truncated.png": good[: len(good) // 2],
        "zero.png": b"",
        "text.jpg": b"this is not an image at all",
        "cut.jpg": b"\xff\xd8\xff\xe0" + b"\x00" * 40,
        "bomb.png": bomb_png(),
    }
    for name, data in bad.items():
        (folder / "cat" / name).write_bytes(data)
    return sorted(bad)


@pytest.fixture
def cifar_folder(shared_cifar10, tmp_path) -> Path:
    return copy_cifar(shared_cifar10, tmp_path / "data")


def decoded(source, indices=None) -> dict[tuple[int, bytes], int]:
    """(label, pixel bytes) -> count of the images a stream decodes."""
    images, _ = materialise(source, indices)
    keys: dict[tuple[int, bytes], int] = {}
    for image, label in zip(images.images, images.labels, strict=True):
        key = (int(label), image.numpy().tobytes())
        keys[key] = keys.get(key, 0) + 1
    return keys


def folder_stream(folder: Path, split: str = "train"):
    found = scan_folder(folder)
    source = list_source(found.lists[split], found.classes)
    source.size = (32, 32)
    return source


def test_folder_and_shards_stream_the_same_images_and_labels(cifar_folder, tmp_path):
    summary = write_shards(cifar_folder, tmp_path / "shards", shard_size=20, progress=False)
    assert summary.images == {"train": 72, "test": 18}
    assert summary.shards["train"] == [f"train-00000{i}.tar" for i in range(4)]
    classes, sources, skipped = shard_sources(tmp_path / "shards")
    assert classes == list(CLASSES) and skipped == []
    for split in ("train", "test"):
        sources[split].size = (32, 32)
        assert decoded(sources[split]) == decoded(folder_stream(cifar_folder, split))
    # a plain WebDataset layout: <key>.png and <key>.cls members, read by any tar reader
    with tarfile.open(tmp_path / "shards" / "train-000000.tar") as tar:
        names = tar.getnames()
    assert names[0].endswith(".png") and names[1] == names[0][:-4] + ".cls"
    assert json.loads((tmp_path / "shards" / "dataset.json").read_text())["classes"] == list(
        CLASSES
    )


def epoch_batches(source, order, batch_size, rank=0, world=1, workers=2, start=0):
    epoch = StreamEpoch(source, batch_size, order, workers=workers, rank=rank, world=world)
    if start:
        epoch = epoch.start_at(start)
    return [(images, labels, indices) for images, labels, indices in epoch]


def test_ranks_and_workers_split_each_global_batch_disjointly_and_completely(cifar_folder):
    source = folder_stream(cifar_folder)  # 72 images
    order = torch.randperm(72, generator=torch.Generator().manual_seed(3))
    world, batch = 3, 10  # the last global batch (2 images) cannot give 3 ranks 2 each
    assert stream_steps(72, batch, world) == 7 and stream_steps(72, batch, 1) == 8
    per_rank = [epoch_batches(source, order, batch, rank=r, world=world) for r in range(world)]
    assert [len(b) for b in per_rank] == [7, 7, 7]
    seen = []
    for step in range(7):
        parts = [per_rank[r][step][2] for r in range(world)]
        assert [len(p) for p in parts] == [4, 3, 3]  # tensor_split's slices, as in memory
        assert torch.equal(torch.cat(parts), order[step * batch : (step + 1) * batch])
        seen += torch.cat(parts).tolist()
    assert sorted(seen) == sorted(order[:70].tolist())  # disjoint and complete
    # labels and pixels are the indexed images'
    images, labels, indices = per_rank[1][2]
    assert torch.equal(labels, source.labels[indices])
    assert torch.equal(images[0].permute(1, 2, 0), torch.tensor(source.decode(int(indices[0]))))


def test_start_at_yields_the_batches_an_uninterrupted_epoch_yields(cifar_folder):
    source = folder_stream(cifar_folder)
    order = torch.randperm(72, generator=torch.Generator().manual_seed(0))
    full = epoch_batches(source, order, 16, workers=2)
    resumed = epoch_batches(source, order, 16, workers=1, start=3)
    assert len(full) == 5 and len(resumed) == 2
    for a, b in zip(full[3:], resumed, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_streamed_training_skips_and_lists_unreadable_files(cifar_folder, tmp_path, capsys):
    bad = add_bad_files(cifar_folder / "train")
    run = cnnkit.train(
        data=str(cifar_folder),
        stream=True,
        workers=1,
        val_split=0.0,
        epochs=1,
        batch_size=16,
        device="cpu",
        report=False,
        project=str(tmp_path / "runs"),
        name="s",
        progress=False,
    )
    err = capsys.readouterr().err
    assert "this epoch skipped 5 unreadable image(s)" in err
    assert run.metrics["skipped_images"] == 5 and run.metrics["epochs_done"] == 1
    assert len(run.history) == 1 and np.isfinite(run.history[0]["train_loss"])
    listed = err.split("this epoch skipped", 1)[1]
    assert sum(name in listed for name in bad) == 3  # the first three named, then "2 more"


def test_a_tiny_memory_budget_makes_a_folder_stream_through_the_cli(cifar_folder, tmp_path, capsys):
    assert plan_stream(str(cifar_folder), None) is None  # 90 small images: in memory
    code = main(
        [
            "train",
            "--data",
            str(cifar_folder),
            "--memory-budget",
            "1K",
            "--workers",
            "1",
            "--epochs",
            "1",
            "--batch-size",
            "16",
            "--device",
            "cpu",
            "--no-report",
            "--no-progress",
            "--project",
            str(tmp_path / "runs"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "decodes to 270 KiB (90 images of 32x32), over the memory budget of 1 KiB (1K)" in out
    assert "streaming 66 training images" in out  # 72 less 2 per class for validation
    assert plan_stream(str(cifar_folder), False) is None  # --no-stream keeps it in memory


def test_shards_with_hostile_members_train_and_list_them(cifar_folder, tmp_path, capsys):
    add_bad_files(cifar_folder / "train")
    shards = tmp_path / "shards"
    summary = write_shards(cifar_folder, shards, shard_size=40, progress=False)
    # no image header (zero bytes, text, the cut JPEG), a bomb's or a cut PNG: left out
    left_out = sorted(Path(p).name for p, _ in summary.skipped)
    assert left_out == ["bomb.png", "cut.jpg", "text.jpg", "truncated.png", "zero.png"]
    members = {
        "notes.txt": b"hello",  # a sample without an image
        "fake.png": b"GIF8 no",  # an image name, not an image
        "fake.cls": b"1",
        "bomb.png": bomb_png(),
        "bomb.cls": b"2",
    }
    with tarfile.open(shards / "train-000001.tar", "a") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    run = cnnkit.train(
        data=str(shards),
        workers=0,
        val_split=0.0,
        epochs=1,
        batch_size=16,
        device="cpu",
        report=False,
        project=str(tmp_path / "runs"),
        name="s",
        progress=False,
    )
    captured = capsys.readouterr()
    assert "notes (no image member in the sample)" in captured.err  # listed when loading
    epoch_line = captured.err.split("this epoch skipped", 1)[1]
    assert epoch_line.startswith(" 2 unreadable image(s)")  # fake, bomb
    assert "fake.png (corrupt GIF)" in epoch_line and "exceeds the limit" in epoch_line
    assert run.metrics["skipped_images"] == 3 and run.metrics["epochs_done"] == 1


def test_shard_leaves_out_a_truncated_png_and_names_it(tmp_path, capsys):
    """A PNG cut short has a whole header: only decoding every pixel finds it, and it must be
    left out of the shards, not packed while the count says it was left out."""
    from PIL import Image

    source = tmp_path / "data"
    for c, name in enumerate(CLASSES):
        (source / "train" / name).mkdir(parents=True)
        for i in range(3):
            pixels = np.random.default_rng(c * 3 + i).integers(0, 256, (16, 16, 3), np.uint8)
            Image.fromarray(pixels).save(source / "train" / name / f"{i}.png")
    whole = (source / "train" / "cat" / "1.png").read_bytes()
    (source / "train" / "cat" / "1.png").write_bytes(whole[: len(whole) // 2])  # in its pixels
    out = tmp_path / "shards"
    assert main(["shard", str(source), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "left out 1 unreadable file(s): train/cat/1.png: truncated PNG" in printed
    assert "wrote 8 images in 1 shards" in printed
    with tarfile.open(out / "train-000000.tar") as tar:
        packed = sorted(m.name for m in tar.getmembers() if m.name.endswith(".png"))
    readable = sorted(f"{n}/{i}.png" for n in CLASSES for i in range(3) if (n, i) != ("cat", 1))
    assert packed == readable
    assert json.loads((out / "dataset.json").read_text())["splits"]["train"]["images"] == 8


def test_shard_command_refuses_bad_input_in_one_line(cifar_folder, tmp_path, capsys):
    assert main(["shard", str(tmp_path / "missing"), "--out", str(tmp_path / "s")]) == 2
    assert main(["shard", str(cifar_folder), "--out", str(cifar_folder)]) == 2
    out = str(tmp_path / "s")
    assert main(["shard", str(cifar_folder), "--out", out, "--shard-size", "0"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("cnnkit: error: ") for line in lines)
    assert "not found" in lines[0] and "not an empty folder" in lines[1]
    assert "--shard-size" in lines[2]
    assert not (tmp_path / "s").exists()


def test_shards_whose_index_is_cut_short_are_one_line_naming_it(cifar_folder, tmp_path, capsys):
    write_shards(cifar_folder, tmp_path / "shards", shard_size=40, progress=False)
    index = tmp_path / "shards" / "dataset.json"
    index.write_text(index.read_text()[:20])  # cut short: no longer JSON
    argv = ["train", "--data", str(tmp_path / "shards"), "--epochs", "1", "--no-progress"]
    assert main([*argv, "--project", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"cnnkit: error: {index} cannot be read") and "\n" not in err


def test_memory_budget_reads_sizes_and_shares():
    assert memory_budget("1K")[0] == 1024 and memory_budget("2GiB")[0] == 2 * 2**30
    assert 0 < memory_budget("10%")[0] < memory_budget("50%")[0]
    for bad in ("lots", "-1G", "150%"):
        with pytest.raises(CnnkitError):
            check_budget(bad)
    with pytest.raises(CnnkitError, match="memory budget"):
        cnnkit.TrainConfig(memory_budget="8 apples")


def test_a_streamed_run_stopped_mid_epoch_resumes_to_the_same_weights(cifar_folder, tmp_path):
    from cnnkit.config import TrainConfig
    from cnnkit.engine.fit import Trainer
    from stop_after import StopAfter

    common = dict(
        data=str(cifar_folder),
        stream=True,
        workers=1,
        val_split=0.0,
        epochs=2,
        batch_size=16,
        augment="basic",
        device="cpu",
        precision="fp32",
        report=False,
        project=str(tmp_path),
    )
    whole = cnnkit.train(name="whole", progress=False, **common)
    (tmp_path / "cut").mkdir()
    trainer = Trainer(TrainConfig(name="cut", **common), tmp_path / "cut", progress=False)
    trainer.stop = StopAfter(5 + 2)  # 5 steps an epoch (72 images): stop at step 2 of epoch 2
    assert trainer.fit().interrupted
    assert torch.load(tmp_path / "cut" / "last.pt", weights_only=True)["progress"]["step"] == 2
    resumed = cnnkit.train(resume=tmp_path / "cut", progress=False)
    a = torch.load(resumed.last, weights_only=True)["state_dict"]
    b = torch.load(whole.last, weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
