"""End to end through the `cnnkit` command, as a user runs it, on the bundled sample."""

import csv
import fcntl
import io
import json
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

import cnnkit
from cnnkit.cli import main
from cnnkit.data import decode_image, load_data
from cnnkit.demo import sample_images

SAMPLE = "cifar10-sample"


def train_args(project, name, *extra):
    return [
        "train",
        "--data",
        SAMPLE,
        "--project",
        str(project),
        "--name",
        name,
        "--no-progress",
        *extra,
    ]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    project = tmp_path_factory.mktemp("runs")
    assert main(train_args(project, "r", "--epochs", "2", "--batch-size", "32")) == 0
    return project / "r"


def test_train_writes_a_complete_run_folder(run_dir):
    names = {p.name for p in run_dir.iterdir()}
    expected = {"config.yaml", "classes.txt", "history.csv", "metrics.json", "best.pt", "last.pt"}
    assert expected | {"curves.png"} <= names
    with open(run_dir / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert float(rows[1]["train_loss"]) < float(rows[0]["train_loss"])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    # the best epoch's validation accuracy is best.pt's share of the run's 200 held-out images
    # that it classifies right, counted here from its own predictions
    clf = cnnkit.load(run_dir)
    val, split = clf.split_images(SAMPLE, "val", progress=False)
    assert split == "val" and len(val) == 200
    correct = int((clf.predict_images(val.images).argmax(1) == val.labels).sum())
    best_row = rows[metrics["best_epoch"] - 1]
    assert float(best_row["val_accuracy"]) == pytest.approx(correct / 200, abs=1e-6)
    assert metrics["test_images"] == 500 and metrics["test_accuracy"] > 0.1  # above chance
    assert (run_dir / "classes.txt").read_text().split() == sorted(
        ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    )
    ckpt = torch.load(run_dir / "best.pt", weights_only=True)
    assert ckpt["model"]["name"] == "simple_cnn" and ckpt["preprocessing"]["size"] == [32, 32]


def test_evaluate_prints_and_writes_reports_matching_the_run(run_dir, capsys):
    assert main(["evaluate", str(run_dir), "--data", SAMPLE, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "top-1" in out and "airplane" in out
    report_dir = run_dir / f"eval-{SAMPLE}-test"
    for name in ("metrics.json", "per_class.csv", "confusion_matrix.csv", "confusion_matrix.png"):
        assert (report_dir / name).is_file()
    metrics = json.loads((report_dir / "metrics.json").read_text())
    trained = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["top1_accuracy"] == pytest.approx(trained["test_accuracy"], abs=1e-6)
    assert sum(sum(row) for row in metrics["confusion_matrix"]) == 500
    # top-1 and top-5: the shares of test images whose label is among the 1 or 5 highest
    # logits, counted here from the classifier's logits
    test = load_data(SAMPLE, splits=("test",), progress=False).test
    ranked = cnnkit.load(run_dir).logits(test.images)[0].argsort(dim=1, descending=True)
    hits = ranked == test.labels[:, None]
    assert metrics["top1_accuracy"] == pytest.approx(float(hits[:, :1].sum()) / 500, abs=1e-6)
    assert metrics["top5_accuracy"] == pytest.approx(float(hits[:, :5].sum()) / 500, abs=1e-6)


def test_predict_json_and_csv_skip_unreadable_files(run_dir, tmp_path, capsys):
    images = [str(p) for p in sample_images()[:3]]
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png at all")
    fp32 = ["--json", "--precision", "fp32"]
    assert main(["predict", str(run_dir / "best.pt"), *images, str(bad), *fp32]) == 0
    captured = capsys.readouterr()
    results = json.loads(captured.out)
    assert [r["source"] for r in results] == images
    assert "broken.png" in captured.err
    # each image's 3 best classes and probabilities: the softmax of the model's logits for it,
    # computed here from the decoded file
    clf = cnnkit.load(run_dir, precision="fp32")
    prep = clf.preprocessing
    for path, result in zip(images, results, strict=True):
        pixels = torch.from_numpy(decode_image(path, size=prep.size, resize=prep.resize).copy())
        with torch.no_grad():
            logits = clf.model(prep.to_input(pixels.permute(2, 0, 1)[None]))
        probs, order = logits.softmax(dim=1)[0].topk(3)
        assert [t["label"] for t in result["top_k"]] == [clf.classes[i] for i in order]
        got = [t["probability"] for t in result["top_k"]]
        assert got == pytest.approx(probs.tolist(), abs=1e-5)
    assert main(["predict", str(run_dir), images[0], *fp32, "--top-k", "10"]) == 0
    every_class = json.loads(capsys.readouterr().out)[0]["top_k"]
    assert sum(t["probability"] for t in every_class) == pytest.approx(1.0, abs=1e-5)
    assert main(["predict", str(run_dir), images[0], "--csv", "--top-k", "2"]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0] == ["source", "rank", "label", "probability", "prediction"] and len(rows) == 3
    assert rows[1][4] == rows[2][4] == rows[1][2]  # no threshold: the decision is rank 1
    assert main(["predict", str(run_dir), images[0], "--json", "--tta", "flip"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["tta"] == "flip"
    assert main(["predict", str(run_dir), images[0], "--top-k", "0"]) == 2
    assert "top_k must be a whole number >= 1" in capsys.readouterr().err


def test_options_may_come_before_or_between_the_files(run_dir, capsys):
    images = [str(p) for p in sample_images()[:3]]
    assert main(["predict", str(run_dir), "--json", *images[:2], "--top-k", "2", images[2]]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["source"] for r in results] == images and len(results[0]["top_k"]) == 2
    assert main(["predict", str(run_dir), "--jsn", images[0]]) == 2
    assert "unknown option --jsn; did you mean --json?" in capsys.readouterr().err


def test_predict_exits_non_zero_only_when_nothing_could_be_read(run_dir, tmp_path, capsys):
    bad = tmp_path / "empty.jpg"
    bad.write_bytes(b"")
    assert main(["predict", str(run_dir), str(bad)]) == 2
    assert "no image could be read" in capsys.readouterr().err


def test_python_api_predicts_paths_pil_images_and_arrays(run_dir):
    clf = cnnkit.load(run_dir / "best.pt")
    path = sample_images()[0]
    by_path = clf.predict(str(path))
    by_pil = clf.predict(Image.open(path))
    by_array = clf.predict(np.asarray(Image.open(path)))
    assert by_path.label == by_pil.label == by_array.label
    assert by_path.probability == pytest.approx(by_array.probability, abs=1e-5)
    assert by_path.label in clf.classes
    report = cnnkit.evaluate(str(run_dir), SAMPLE, out_dir=None, progress=False)
    trained = json.loads((run_dir / "metrics.json").read_text())
    assert sum(report.support) == 500
    assert report.top1 == pytest.approx(trained["test_accuracy"], abs=1e-6)  # best.pt, test


def test_config_file_with_flag_override(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(f"data: {SAMPLE}\nepochs: 5\nbatch_size: 128\noptimizer: sgd\nlr: 0.05\n")
    project = tmp_path / "runs"
    rc = main(
        [
            "train",
            "--config",
            str(config),
            "--epochs",
            "1",
            "--project",
            str(project),
            "--name",
            "c",
            "--no-progress",
        ]
    )
    assert rc == 0
    saved = (project / "c" / "config.yaml").read_text()
    assert "epochs: 1" in saved and "optimizer: sgd" in saved and "batch_size: 128" in saved

    # resuming reads a --config too, under the flags: epochs from the flag, smoothing from it
    config.write_text("epochs: 9\nlabel_smoothing: 0.1\n")
    resume = ["train", "--resume", str(project / "c"), "--config", str(config), "--no-progress"]
    assert main([*resume, "--epochs", "2"]) == 0
    saved = (project / "c" / "config.yaml").read_text()
    assert "epochs: 2" in saved and "label_smoothing: 0.1" in saved and "batch_size: 128" in saved


# the progress bar once it shows a batch of epoch 2 done, e.g. "epoch 2/3:   7%|█▌    | 8/113"
EPOCH_2_UNDER_WAY = re.compile(r"epoch 2/3:[^|\r]*\|[^|]*\|\s*[1-9]\d*/\d+")


def _read_terminal(fd: int, chunks: list[str]) -> None:
    """Collect what a child writes to its terminal until it closes it."""
    while True:
        try:
            data = os.read(fd, 4096)
        except OSError:  # EIO: the child has exited and its side of the terminal is closed
            return
        if not data:
            return
        chunks.append(data.decode(errors="replace"))


def signalled_mid_epoch_2(args: list[str], signum: int) -> tuple[int, str, str]:
    """Run `cnnkit ARGS` (3 epochs) with stderr on a terminal, so its progress bar shows, and
    send it `signum` once the bar shows a batch of epoch 2 done: the signal lands mid-epoch.
    Returns the exit code, stdout, and what it wrote to the terminal."""
    terminal, child_side = pty.openpty()
    fcntl.ioctl(child_side, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 160, 0, 0))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "cnnkit", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=child_side, env=env, text=True)
    os.close(child_side)
    chunks: list[str] = []
    reader = threading.Thread(target=_read_terminal, args=(terminal, chunks), daemon=True)
    reader.start()
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        if EPOCH_2_UNDER_WAY.search("".join(chunks)):
            proc.send_signal(signum)
            break
        time.sleep(0.05)
    out, _ = proc.communicate(timeout=300)
    reader.join(timeout=10)
    os.close(terminal)
    return proc.returncode, out, "".join(chunks)


def with_progress_bar(args: list[str]) -> list[str]:
    return [a for a in args if a != "--no-progress"]


def test_interrupted_run_resumes_to_the_same_weights(tmp_path):
    """Ctrl-C mid-epoch writes last.pt; --resume ends bit-identical to an uninterrupted run."""
    project = tmp_path / "runs"
    # batches of 4 make epoch 2 long (450 steps) next to the bar's 0.5 s refresh and the signal's
    # latency on a loaded machine, so the signal lands inside it
    common = ["--epochs", "3", "--batch-size", "4", "--seed", "3", "--precision", "fp32"]
    assert main(train_args(project, "full", *common)) == 0

    args = with_progress_bar(train_args(project, "cut", *common))
    rc, out, err = signalled_mid_epoch_2(args, signal.SIGINT)
    assert rc == 130, err
    assert "--resume" in out
    cut = torch.load(project / "cut" / "last.pt", weights_only=True)
    # stopped inside epoch 2: 1,800 training images are 450 batches of 4
    assert cut["epoch"] == 1 and 0 < cut["progress"]["step"] < 450, cut["progress"]["step"]

    assert main(["train", "--resume", str(project / "cut"), "--no-progress"]) == 0
    full = torch.load(project / "full" / "last.pt", weights_only=True)
    resumed = torch.load(project / "cut" / "last.pt", weights_only=True)
    assert resumed["epoch"] == 3
    for key, value in full["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key


def test_sigterm_mid_epoch_saves_last_pt_to_resume_from(tmp_path):
    """kill, timeout and job schedulers send SIGTERM: the run stops as on Ctrl-C."""
    project = tmp_path / "runs"
    args = train_args(project, "t", "--epochs", "3", "--batch-size", "4", "--precision", "fp32")
    rc, out, err = signalled_mid_epoch_2(with_progress_bar(args), signal.SIGTERM)
    assert rc == 143, err  # 128 + SIGTERM, as a shell reports a terminated job
    assert "terminated: stopping after this batch" in err and "--resume" in out
    cut = torch.load(project / "t" / "last.pt", weights_only=True)
    # stopped in epoch 2, after some of its 450 batches (by default SIGTERM kills: exit -15)
    assert cut["epoch"] == 1 and 0 < cut["progress"]["step"] < 450, cut["progress"]["step"]


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "cnnkit", *args], capture_output=True, text=True)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["train", "--data", "no/such/folder"], "not found"),
        (["train", "--model", "simple_cn"], "did you mean 'simple_cnn'"),
        (["train", "--batch-size", "0"], "batch_size must be a positive"),
        (["train", "--epochs", "-1"], "epochs must be a positive"),
        (["train", "--epoch", "3"], "did you mean --epochs"),
        (["train", "--optimizer", "adamm"], "did you mean 'adam'"),
        (["train", "--data", "cifar100000"], "unknown dataset"),
        (["predict", "missing.pt", "x.png"], "checkpoint not found"),
        (["summary", "resnet81"], "did you mean 'resnet18'"),
        (["evaulate", "runs/x"], "unknown command 'evaulate'; did you mean 'evaluate'?"),
        (["datasets", "--inspect", "x", "--task", "segmnt"], "did you mean 'segment'?"),
        (["evaluate", "runs/x", "--precision", "bogus"], "invalid choice: 'bogus'"),
        (["evaluate", "runs/x", "--batch-size", "-1"], "--batch-size: must be at least 1"),
        (["lr-find", "--steps", "0"], "--steps: must be at least 1"),
        (["train", "--lr", "nan"], "lr must be a finite number"),
        (["train", "--seed", "-1"], "seed must not be negative"),
        (["show-batch", "--out", "/proc/no/batch.png"], "/proc/no: No such file or directory"),
    ],
)
def test_user_mistakes_are_one_line_and_exit_2(args, expected):
    result = run_cli(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0] and "Traceback" not in result.stderr


def test_debug_shows_the_traceback():
    result = run_cli("--debug", "summary", "resnet81")
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_checkpoint_classes_that_differ_from_the_data_are_refused(run_dir, tmp_path, capsys):
    for name in ("x", "y"):
        (tmp_path / "d" / name).mkdir(parents=True)
        Image.new("RGB", (32, 32), (1, 2, 3)).save(tmp_path / "d" / name / "a.png")
    assert main(["evaluate", str(run_dir), "--data", str(tmp_path / "d"), "--no-progress"]) == 2
    assert "classes differ" in capsys.readouterr().err


def copy_sample_classes(root, classes=("cat", "ship"), per_class=10):
    """root/<class>/*.png: real CIFAR-10 photos from the bundled sample, train-only."""
    for name in classes:
        (root / name).mkdir(parents=True)
        for f in [p for p in sample_images(per_class) if p.parent.name == name]:
            (root / name / f.name).write_bytes(f.read_bytes())
    return str(root)


def evaluated(capsys, *args):
    assert main(["evaluate", *args, "--json", "--no-progress"]) == 0
    out = capsys.readouterr()
    return json.loads(out.out)["images"], out.err


def test_evaluate_on_a_train_only_folder_uses_the_runs_held_out_images(
    tmp_path, capsys, monkeypatch
):
    copy_sample_classes(tmp_path / "pets")
    monkeypatch.chdir(tmp_path)  # trained on the relative path "pets"
    project = tmp_path / "runs"
    for name, split in (("held", "0.2"), ("all", "0")):
        args = ["train", "--data", "pets", "--epochs", "1", "--val-split", split]
        assert main([*args, "--project", str(project), "--name", name, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "evaluates best.pt on its validation images" in out and "training took" in out
    assert "it trained on all of it" in out
    held = str(project / "held")
    # the default (test) split falls back to the 4 held-out images, never the training ones,
    # also from another working directory, naming the data by its absolute path
    monkeypatch.chdir(project)
    data = str(tmp_path / "pets")
    count, err = evaluated(capsys, held, "--data", data)
    assert count == 4 and "validation images the run did not train on" in err
    assert evaluated(capsys, held)[0] == 4  # without --data: the run's data, found from here
    assert (project / "held" / "eval-pets-val").is_dir()
    # embed splits the same way: the run's 16 training images, not all 20
    assert main(["embed", held, "--data", data, "--out", str(tmp_path / "f.npz")]) == 0
    assert np.load(tmp_path / "f.npz")["labels"].shape == (16,)
    assert "features of" in capsys.readouterr().out
    monkeypatch.chdir(tmp_path)
    assert evaluated(capsys, held, "--split", "val")[0] == 4
    assert evaluated(capsys, held, "--split", "train")[0] == 16
    # a run that trained on all of it has nothing unseen to evaluate there
    assert main(["evaluate", str(project / "all"), "--no-progress"]) == 2
    assert "trained on all of it" in capsys.readouterr().err
    # other data without a test split is all evaluation data, and has no validation split
    other = copy_sample_classes(tmp_path / "more", per_class=3)
    assert evaluated(capsys, str(project / "all"), "--data", other)[0] == 6
    assert main(["evaluate", str(project / "all"), "--data", other, "--split", "val"]) == 2
    assert "no 'val' images" in capsys.readouterr().err


def test_evaluate_on_a_folder_with_val_but_no_test_uses_the_val_folder(tmp_path, capsys):
    copy_sample_classes(tmp_path / "d" / "train", per_class=6)
    copy_sample_classes(tmp_path / "d" / "val", per_class=2)
    args = train_args(tmp_path / "runs", "v", "--epochs", "1")
    args[args.index(SAMPLE)] = str(tmp_path / "d")
    assert main(args) == 0
    assert "evaluates best.pt on its validation images" in capsys.readouterr().out
    count, err = evaluated(capsys, str(tmp_path / "runs" / "v"))
    assert count == 4 and "did not train on" in err


def test_held_out_data_with_only_a_val_split_is_scored_on_it_with_a_note(run_dir, tmp_path, capsys):
    held = tmp_path / "held"
    copy_sample_classes(held / "val", per_class=3)
    count, err = evaluated(capsys, str(run_dir), "--data", str(held))
    assert count == 6 and "Traceback" not in err
    assert f"{held} has no test split: scoring its 6 validation images (its only split)" in err
    assert (run_dir / "eval-held-val" / "metrics.json").is_file()
    # asked for by name it is the same split, without the note
    count, err = evaluated(capsys, str(run_dir), "--data", str(held), "--split", "val")
    assert count == 6 and "no test split" not in err
    # with a train split beside it there are two candidates: still the user's choice
    copy_sample_classes(held / "train", per_class=3)
    assert main(["evaluate", str(run_dir), "--data", str(held), "--no-progress"]) == 2
    assert "pass --split val to score its validation images" in capsys.readouterr().err


def test_a_folder_with_one_class_is_refused_before_training(tmp_path, capsys):
    (tmp_path / "only" / "cat").mkdir(parents=True)
    for i in range(4):
        Image.new("RGB", (32, 32), (i, 2, 3)).save(tmp_path / "only" / "cat" / f"{i}.png")
    args = ["train", "--data", str(tmp_path / "only"), "--project", str(tmp_path / "runs")]
    assert main([*args, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "at least 2 class" in err and "(cat)" in err
    assert not list((tmp_path / "runs").glob("*/last.pt"))


def test_corrupt_checkpoint_is_refused(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(os.urandom(500))
    assert main(["predict", str(bad), "x.png"]) == 2
    assert "not a readable checkpoint" in capsys.readouterr().err


def test_models_and_summary_commands(capsys):
    assert main(["models"]) == 0
    listing = capsys.readouterr().out
    assert "simple_cnn" in listing and "resnet18" in listing
    assert main(["summary", "simple_cnn"]) == 0
    out = capsys.readouterr().out
    assert "160,202" in out or "160202" in out


def test_tensorboard_event_files_are_written(tmp_path):
    pytest.importorskip("tensorboard")
    rc = main(train_args(tmp_path, "tb", "--epochs", "1", "--batch-size", "128", "--tensorboard"))
    assert rc == 0
    events = list((tmp_path / "tb" / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 100


def test_output_piped_into_a_reader_that_stops_early_is_not_a_traceback(run_dir):
    # 500 predictions as JSON (~200 KB) overflow the pipe buffer after `head` has gone
    folder = sample_images()[0].parent.parent
    result = subprocess.run(
        f"{sys.executable} -m cnnkit predict {run_dir} {folder} --json | head -n 1",
        shell=True,
        capture_output=True,
        text=True,
    )
    assert result.stdout.strip() == "["
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr


def test_train_help_renders_every_option(capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["train", "--help"])
    assert stopped.value.code == 0
    out = capsys.readouterr().out
    assert "--lookahead" in out and "--alternating-flip" in out and "30% of the run" in out


def test_evaluate_refuses_to_write_its_reports_into_a_run_folder(cls_run, capsys):
    """`--out RUN` would replace the run's own metrics.json (its best epoch, timing, test
    scores) with the evaluation's."""
    before = (cls_run.run_dir / "metrics.json").read_bytes()
    assert main(["evaluate", str(cls_run.run_dir), "--out", str(cls_run.run_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a run folder" in err[0]
    assert (cls_run.run_dir / "metrics.json").read_bytes() == before
