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


def test_kill_during_write_leaves_previous_checkpoint_intact(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, state_dict={"w": torch.ones(2)}, epoch=0)
    script = textwrap.dedent(
        f"""
        import torch
        from cnnkit.engine.checkpoint import save_checkpoint
        print("ready", flush=True)
        for epoch in range(1, 10_000):
            save_checkpoint({str(path)!r}, state_dict={{"w": torch.randn(8_000_000)}}, epoch=epoch)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"ready"
    time.sleep(1.5)  # several 32 MB writes are under way by now
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ckpt = load_checkpoint(path)  # whatever epoch it reached, the file is complete
    assert ckpt["state_dict"]["w"].numel() in (2, 8_000_000)


def test_corrupt_file_is_a_one_line_error(tmp_path):
    path = tmp_path / "bad.pt"
    path.write_bytes(os.urandom(2000))
    with pytest.raises(CnnkitError, match="not a readable checkpoint"):
        load_checkpoint(path)


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
