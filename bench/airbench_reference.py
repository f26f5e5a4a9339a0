"""Run an airbench script (e.g. airbench94_muon.py) on this machine as the speed reference for
`bench/speedrun.py --preset cifar10-94`, offline, on the same CIFAR-10 files.

    python bench/airbench_reference.py /path/to/airbench94_muon.py --data /root/data/cifar10 \
        --seconds 150 --out $OUT/airbench.json

airbench's scripts read ``cifar10/train.pt`` and ``cifar10/test.pt`` under their working folder
(uint8 images (N, 32, 32, 3), int64 labels, class names) and download CIFAR-10 when they are
missing, which a machine without internet cannot. This writes those two files from the PNG
folders through cnnkit's own loader, runs the script unchanged in a temporary folder (its
airbench94_muon loop runs 200 timed runs after a warm-up; ``--seconds`` stops it early), and
reads each run's final "eval" row (TTA accuracy and the script's own CUDA-event time) from its
printed table. The script is airbench's code, not cnnkit's: it is read from where you put it
and never copied into this repository.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cnnkit  # noqa: E402
from common import SHARED_CIFAR10, print_machine  # noqa: E402


def write_airbench_data(data: str, folder: Path) -> None:
    """train.pt and test.pt in airbench's layout, from any dataset cnnkit.load_data reads."""
    splits = cnnkit.load_data(data, val_split=0.0, progress=False)
    folder.mkdir(parents=True, exist_ok=True)
    for name, part in (("train", splits.train), ("test", splits.test)):
        if part is None:
            raise SystemExit(f"{data} has no {name} split")
        # Folders load class by class; airbench whitens from the first 5,000 training images,
        # which must be a mix of classes as in the original files, so shuffle (seeded) first.
        order = torch.randperm(len(part), generator=torch.Generator().manual_seed(0))
        torch.save(
            {
                "images": part.images[order].permute(0, 2, 3, 1).contiguous(),  # NCHW -> NHWC
                "labels": part.labels[order].clone(),
                "classes": list(splits.classes),
            },
            folder / f"{name}.pt",
        )


def eval_rows(output: str) -> list[dict[str, float]]:
    """(tta accuracy, seconds) of each finished run: the table rows whose epoch cell is 'eval'
    (columns: run, epoch, ..., tta_val_acc, time_seconds). A run's label is printed on its first
    row only; the untimed warm-up run (label 'warmup', random labels) is left out."""
    rows, label = [], ""
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 6 or cells[1] == "epoch":  # not a table row, or the header
            continue
        label = cells[0] or label
        if cells[1] == "eval" and label != "warmup":
            rows.append(
                {"run": label, "tta_accuracy": float(cells[-2]), "seconds": float(cells[-1])}
            )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("script", help="airbench script, e.g. airbench94_muon.py")
    parser.add_argument("--data", default=None, help="default: ../shared/data/cifar10")
    parser.add_argument("--seconds", type=float, default=150.0, help="stop the script after this")
    parser.add_argument("--out", default=None, help="also write the results as JSON here")
    args = parser.parse_args()

    machine = print_machine()
    script = Path(args.script).resolve()
    if not script.is_file():
        raise SystemExit(f"airbench script not found: {script}")
    data = args.data or str(SHARED_CIFAR10)
    with tempfile.TemporaryDirectory() as tmp:
        write_airbench_data(data, Path(tmp) / "cifar10")
        try:
            done = subprocess.run(
                [sys.executable, "-u", str(script)],  # unbuffered: a stopped run keeps its rows
                cwd=tmp,
                capture_output=True,
                text=True,
                timeout=args.seconds,
            )
            output = done.stdout
        except subprocess.TimeoutExpired as stopped:
            output = stopped.stdout or ""
            output = output.decode() if isinstance(output, bytes) else output
    runs = eval_rows(output)
    print(output[-4000:])
    if not runs:
        raise SystemExit("no finished airbench run in the output")
    accs = [r["tta_accuracy"] for r in runs]
    secs = [r["seconds"] for r in runs]
    spread = statistics.stdev if len(runs) > 1 else (lambda _: 0.0)
    print(
        f"{script.name}: {len(runs)} runs; TTA accuracy {statistics.mean(accs):.4f} +- "
        f"{spread(accs):.4f}; time {statistics.mean(secs):.3f}s +- {spread(secs):.3f}s"
    )
    if args.out:
        summary = {"script": script.name, "machine": machine, "runs": runs}
        Path(args.out).write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
