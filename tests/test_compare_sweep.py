"""`cnnkit compare` and `cnnkit train --sweep` as a user runs them: runs side by side, several
tasks grouped, unreadable runs and histories named, sweeps that leave a combination out or are
interrupted and rerun."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import cnnkit
from cnnkit.cli import main
from cnnkit.report.compare import compare_runs, differing_settings
from cnnkit.report.run import read_run
from cnnkit.sweep import parse_sweep, run_name
from report_pages import assert_self_contained


def train_small(project: Path, name: str, **options):
    return cnnkit.train(
        data="cifar10-sample",
        epochs=1,
        project=str(project),
        name=name,
        progress=False,
        report=False,
        **options,
    )


def test_compare_puts_runs_side_by_side(cls_run, tmp_path):
    other = train_small(tmp_path, "wide-lr", lr=0.003, dropout=0.2)
    out = compare_runs([cls_run.run_dir, other.run_dir], tmp_path / "compare.html")
    html = assert_self_contained(out)
    assert "<td>c</td>" in html and "<td>wide-lr</td>" in html
    settings = differing_settings([read_run(cls_run.run_dir), read_run(other.run_dir)])
    assert settings["lr"] == [0.001, 0.003] and settings["dropout"] == [0.0, 0.2]
    assert "project" not in settings and "name" not in settings
    assert "<td>lr</td>" in html and "validation curves" in html


def write_run(run_dir: Path, task: str, score: str, best: float, **config) -> Path:
    """A finished run's records written by the engine's own writers (config.yaml, two rows of
    history.csv, metrics.json), without training: what `cnnkit compare` reads."""
    from cnnkit.engine import run_folder

    run_dir.mkdir(parents=True)
    run_folder.write_run_files(run_dir, {"data": "d", "lr": 0.001, **config}, ["a", "b"])
    history = [
        {"epoch": e, "stage": "train", "train_loss": 1 / e, f"val_{score}": best * e / 2}
        | {"lr": 0.001, "seconds": 2.0, "images_per_second": 100.0}
        for e in (1, 2)
    ]
    run_folder.write_history(run_dir, history)
    metrics = {"task": task, "epochs_done": 2, "epochs": 2, f"best_val_{score}": best}
    run_folder.write_metrics(run_dir, metrics | {"best_epoch": 2, f"test_{score}": best - 0.01})
    return run_dir


def sections(html: str) -> dict[str, str]:
    """A page's sections: heading -> its HTML."""
    return dict(re.findall(r'<section id="[^"]*"><h2>([^<]*)</h2>(.*?)</section>', html))


@pytest.mark.parametrize("given", ["folder", "list"])
def test_compare_groups_runs_of_several_tasks_by_task(tmp_path, capsys, given):
    """A folder (or a list) of classification, detection and segmentation runs: one table per
    task, each with that task's own score."""
    folder = tmp_path / "runs"
    write_run(folder / "cls-a", "classify", "accuracy", 0.61, model="simple_cnn")
    write_run(folder / "cls-b", "classify", "accuracy", 0.72, model="fastnet_cpu")
    write_run(folder / "det", "detect", "map", 0.31, model="fcos_mobilenet_v2")
    write_run(folder / "seg", "segment", "miou", 0.42, model="lraspp_mobilenet_v3_large")
    write_run(folder / "faces", "embed", "pair_accuracy", 0.875, model="faces")
    runs = [str(folder)] if given == "folder" else [str(p) for p in sorted(folder.iterdir())]
    assert main(["compare", *runs, "--out", str(tmp_path / "c.html")]) == 0
    assert capsys.readouterr().err == ""
    found = sections(assert_self_contained(tmp_path / "c.html"))
    classify = found["classify runs, ranked by validation accuracy"]
    assert "<th>best val accuracy</th>" in classify and "<td>72.00%</td>" in classify
    assert classify.index("<td>cls-b</td>") < classify.index("<td>cls-a</td>")  # ranked
    assert "<td>det</td>" not in classify and "<td>seg</td>" not in classify
    detect = found["detect runs, ranked by validation map"]
    assert "<th>best val map</th>" in detect and "<td>0.3100</td>" in detect
    segment = found["segment runs, ranked by validation miou"]
    assert "<th>best val miou</th>" in segment and "<td>0.4200</td>" in segment
    faces = found["embed runs, ranked by validation pair_accuracy"]
    assert "<th>best val pair_accuracy</th>" in faces and "<td>87.50%</td>" in faces
    assert "<td>model</td>" in found["classify: settings that differ"]
    assert "validation curves" in found["detect: validation curves"]


def test_compare_leaves_out_a_run_whose_metrics_are_corrupt(tmp_path, capsys):
    """A list of three runs, one with a metrics.json that is not JSON: that run is named on
    stderr in one line, the others are compared, and the exit says one was left out (2)."""
    first = write_run(tmp_path / "first", "classify", "accuracy", 0.6)
    bad = write_run(tmp_path / "bad", "classify", "accuracy", 0.7)
    third = write_run(tmp_path / "third", "classify", "accuracy", 0.8, lr=0.01)
    (bad / "metrics.json").write_text('{"task": "classify", "best_val')
    out = tmp_path / "compare.html"
    assert main(["compare", str(first), str(bad), str(third), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"left out {bad}" in err[0] and "metrics.json" in err[0]
    found = sections(assert_self_contained(out))
    assert "<td>first</td>" in found["Runs"] and "<td>third</td>" in found["Runs"]
    assert "<td>bad</td>" not in found["Runs"] and str(bad) in found["Runs left out"]
    # one run left: nothing to compare it with, and no page of one run
    out.unlink()
    assert main(["compare", str(first), str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and f"nothing to compare {first} with" in err[1] and not out.exists()
    # no run left to compare: each named, then one line saying so
    (first / "metrics.json").write_text("not json")
    assert main(["compare", str(first), str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and "none of those given can be read" in err[2] and not out.exists()


CORRUPT_HISTORIES = {
    "empty": b"",
    "not-a-table": b"this is not a csv\n",
    "a-malformed-line": b"epoch,val_accuracy\nabc,xyz\n",
    "not-text": bytes(range(128, 256)),
    "a-folder": None,
}


@pytest.mark.parametrize("content", CORRUPT_HISTORIES.values(), ids=CORRUPT_HISTORIES)
def test_a_corrupt_history_is_named_and_its_curves_left_out(tmp_path, capsys, content):
    """A history.csv that cannot be read: `report` and `compare` name it in one line, leave its
    curves out and go on; a missing one is said by no one (a run before its first epoch)."""
    broken = write_run(tmp_path / "broken", "classify", "accuracy", 0.6)
    other = write_run(tmp_path / "other", "classify", "accuracy", 0.7, lr=0.01)
    history = broken / "history.csv"
    history.unlink()
    if content is None:
        history.mkdir()
    else:
        history.write_bytes(content)
    said = f"cnnkit: {history}: cannot be read ("
    assert main(["report", str(broken)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(said), err
    assert err[0].endswith("); its curves are left out")
    curves = sections((broken / "report.html").read_text())["Training curves"]
    assert "its curves are left out" in curves and "<img" not in curves
    out = tmp_path / "compare.html"
    assert main(["compare", str(broken), str(other), "--out", str(out)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(said), err
    found = sections(out.read_text())
    assert "<td>broken</td>" in found["Runs"]
    assert "its curves are left out" in found["Validation curves"]
    if content is None:
        history.rmdir()
    else:
        history.unlink()
    assert main(["compare", str(broken), str(other), "--out", str(out)]) == 0
    assert capsys.readouterr().err == ""


def test_parse_sweep_types_the_values():
    grid = parse_sweep(["lr=0.001,0.01", "batch-size=32,64", "flip=true,false"])
    assert grid == {"lr": [0.001, 0.01], "batch_size": [32, 64], "flip": [True, False]}
    specs = parse_sweep(["model=conv:8,relu,flatten,dense;conv:16,relu,flatten,dense"])
    assert specs["model"] == ["conv:8,relu,flatten,dense", "conv:16,relu,flatten,dense"]
    assert run_name(3, {"model": "a/b c"}) == "03_model=a-b-c"
    # one layer spec is one value, its commas its own
    one = parse_sweep(["model=conv2d:8:3,relu,flatten,dense"])
    assert one == {"model": ["conv2d:8:3,relu,flatten,dense"]}
    # the order the flags come in does not change the sweep (its run names, its record)
    assert list(parse_sweep(["lr=1,2", "batch-size=8,16"])) == ["batch_size", "lr"]
    assert parse_sweep(["lr=1,2", "batch-size=8,16"]) == parse_sweep(["batch-size=8,16", "lr=1,2"])


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("lrr=1,2", "did you mean 'lr'"),
        ("lr=fast", "not a float"),
        ("lr", "KEY=V1,V2"),
        ("project=a,b", "cannot vary project"),
        ("epochs=1,1", "repeats a value"),
        ("lr=,", "gives no values"),
        ("epochs=none,1", "'none' is not an int"),
    ],
)
def test_bad_sweeps_are_one_line(item, message, capsys):
    assert main(["train", "--sweep", item]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def sweep_command(project: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "cnnkit",
        "train",
        "--data",
        "cifar10-sample",
        "--project",
        str(project),
        "--name",
        "s",
        "--no-report",
        "--no-progress",
        "--sweep",
        "epochs=1,6",
    ]


def test_a_combination_that_cannot_train_is_named_and_the_others_train(tmp_path, capsys):
    """A detector cannot train on class folders: found only when its run starts, it is said,
    and the sweep's other runs train and are compared; the exit says not all did."""
    args = ["train", "--data", "cifar10-sample", "--project", str(tmp_path), "--name", "m"]
    args += ["--epochs", "1", "--no-report", "--no-progress"]
    args += ["--sweep", "model=simple_cnn,fcos_mobilenet_v2,fastnet_cpu"]
    assert main(args) == 2
    captured = capsys.readouterr()
    said = " ".join((captured.out + captured.err).split())
    assert "sweep 2/3 (model=fcos_mobilenet_v2) not trained:" in " ".join(captured.err.split())
    assert "classification dataset" in said and "2 of 3 runs finished" in said
    assert (tmp_path / "m" / "compare.html").is_file()
    assert (tmp_path / "m" / "03_model=fastnet_cpu" / "best.pt").is_file()
    assert not (tmp_path / "m" / "02_model=fcos_mobilenet_v2").exists()


def test_an_interrupted_sweep_keeps_its_runs_and_a_rerun_goes_on(tmp_path):
    folder = tmp_path / "s"
    second = folder / "02_epochs=6"
    proc = subprocess.Popen(
        sweep_command(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if (second / "last.pt").is_file():  # the second run has finished an epoch
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert "sweep interrupted: 1 of 2 runs finished" in out
    first_best = (folder / "01_epochs=1" / "best.pt").stat().st_mtime_ns

    done = subprocess.run(sweep_command(tmp_path), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "finished before, skipped" in done.stdout and "resuming" in done.stdout
    assert (folder / "01_epochs=1" / "best.pt").stat().st_mtime_ns == first_best
    assert json.loads((second / "metrics.json").read_text())["epochs_done"] == 6
    html = assert_self_contained(folder / "compare.html")
    assert "<td>epochs</td>" in html
    # another sweep in the same folder is refused, in one line
    other = subprocess.run(
        [*sweep_command(tmp_path)[:-1], "epochs=2,3"], capture_output=True, text=True, timeout=120
    )
    assert other.returncode == 2 and "holds another sweep" in other.stderr
