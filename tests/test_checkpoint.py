"""Checkpoints: atomic writes, safe loading, clear errors for corrupt or foreign files."""

import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from cnnkit.engine.checkpoint import atomic_torch_save, load_checkpoint, save_checkpoint
from cnnkit.errors import CnnkitError


def test_round_trip_loads_with_weights_only(tmp_path):
    path = tmp_path / "a.pt"
    save_checkpoint(path, state_dict={"w": torch.arange(3.0)}, classes=["a", "b"], epoch=2)
    ckpt = load_checkpoint(path)
    assert ckpt["classes"] == ["a", "b"] and ckpt["epoch"] == 2
    assert torch.equal(ckpt["state_dict"]["w"], torch.arange(3.0))


def test_failed_write_leaves_previous_checkpoint_and_no_temp_file(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, state_dict={"w": torch.ones(2)}, epoch=1)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("disk full, say")

    big = {"w": torch.zeros(1_000_000), "later": Unpicklable()}
    with pytest.raises(RuntimeError):
        save_checkpoint(path, state_dict=big, epoch=2)
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def _partial_temp_file(folder) -> bool:
    """True while a checkpoint write is under way: its temporary file holds some bytes."""
    for tmp in folder.glob(".last.pt.*.tmp"):
        try:
            if tmp.stat().st_size > 0:
                return True
        except FileNotFoundError:  # renamed over last.pt meanwhile
            pass
    return False


def test_kill_during_write_leaves_the_old_or_the_new_complete_checkpoint(tmp_path):
    """SIGKILL in the middle of a write, after at least one write finished: last.pt is one
    whole checkpoint, the last one written or the one before, never a mixture or a torn file."""
    path = tmp_path / "last.pt"
    save_checkpoint(path, state_dict={"w": torch.zeros(2)}, epoch=0)
    script = textwrap.dedent(
        f"""
        import torch
        from cnnkit.engine.checkpoint import save_checkpoint
        for epoch in range(1, 10_000):
            weights = {{"w": torch.full((8_000_000,), float(epoch))}}
            save_checkpoint({str(path)!r}, state_dict=weights, epoch=epoch)
            print(epoch, flush=True)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == b"1"  # one 32 MB write has finished
        deadline = time.monotonic() + 60
        while not _partial_temp_file(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.001)
        assert _partial_temp_file(tmp_path), "no write under way to kill"
    finally:
        proc.send_signal(signal.SIGKILL)
    done = [1, *(int(line) for line in proc.stdout.read().split())]
    proc.wait()
    ckpt = load_checkpoint(path)
    # the last write reported done, or the next one if it finished before it could be reported
    assert ckpt["epoch"] in (done[-1], done[-1] + 1)
    weights = ckpt["state_dict"]["w"]
    assert weights.numel() == 8_000_000 and bool((weights == ckpt["epoch"]).all())


def test_corrupt_file_is_a_one_line_error(tmp_path):
    path = tmp_path / "bad.pt"
    path.write_bytes(os.urandom(2000))
    with pytest.raises(CnnkitError, match="not a readable checkpoint"):
        load_checkpoint(path)


def test_an_unreadable_file_is_told_apart_from_a_damaged_checkpoint(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(CnnkitError, match=r"notes.pt is not a readable checkpoint: it is not a Py"):
        load_checkpoint(text)
    whole = tmp_path / "whole.pt"
    save_checkpoint(whole, state_dict={"w": torch.ones(1000)}, epoch=1)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(CnnkitError, match=r"cut.pt is not a readable checkpoint: it is damaged"):
        load_checkpoint(cut)


def test_plain_state_dict_is_not_taken_for_a_checkpoint(tmp_path):
    path = tmp_path / "foreign.pt"
    torch.save({"w": torch.ones(1)}, path)
    with pytest.raises(CnnkitError, match="not a cnnkit checkpoint"):
        load_checkpoint(path)


def test_loading_never_runs_code_from_the_file(tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"format": "cnnkit-checkpoint", "x": Evil()}, f)
    with pytest.raises(CnnkitError):
        load_checkpoint(path)
    assert not marker.exists()


def test_run_folder_resolves_to_best_then_last(tmp_path):
    atomic_torch_save(
        {"format": "cnnkit-checkpoint", "version": 1, "state_dict": {}, "n": 1},
        tmp_path / "last.pt",
    )
    assert load_checkpoint(tmp_path)["n"] == 1
    with pytest.raises(CnnkitError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
