"""Two torchrun processes (gloo, one thread each) against one process (two threads) on the same
CPU, the same data and the same global batch: what DDP gives on a small machine.

    python bench/ddp_cpu.py [--data ../shared/data/cifar10] [--model simple_cnn] [--epochs 1]

Both runs go through `torchrun --standalone -m cnnkit train`; the figure is the training steps'
images/s from each run's history (data loading, validation and checkpoints excluded). On a GPU
machine pass `--device cuda --nproc N` to compare N GPUs with one.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import torch


def run(nproc: int, threads: int, args: argparse.Namespace, project: Path) -> dict:
    name = f"p{nproc}"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        "--nproc-per-node", str(nproc), "-m", "cnnkit", "train",
        "--data", args.data, "--model", args.model, "--epochs", str(args.epochs),
        "--batch-size", str(args.batch_size // nproc), "--device", args.device,
        "--project", str(project), "--name", name, "--no-progress", "--no-report",
        "--seed", "0",
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{name} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    metrics = json.loads((project / name / "metrics.json").read_text())
    history = metrics["final"]
    seconds = metrics["timing"]["training"]
    return {
        "processes": nproc,
        "threads_each": threads,
        "batch_each": args.batch_size // nproc,
        "training_seconds": seconds,
        "images_per_second_last_epoch": history["images_per_second"],
        "val_accuracy": history["val_accuracy"],
        "test_accuracy": metrics.get("test_accuracy"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/cifar10")
    parser.add_argument("--model", default="simple_cnn")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64, help="global batch")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"torch {torch.__version__}; python {platform.python_version()}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        one = run(1, args.threads, args, project)
        many = run(args.nproc, max(1, args.threads // args.nproc), args, project)
    for row in (one, many):
        print(json.dumps(row))
    ratio = many["images_per_second_last_epoch"] / one["images_per_second_last_epoch"]
    print(
        f"{args.model} on {args.data}, global batch {args.batch_size}: "
        f"{one['images_per_second_last_epoch']:,.0f} img/s in 1 process, "
        f"{many['images_per_second_last_epoch']:,.0f} img/s in {args.nproc}: {ratio:.2f}x"
    )


if __name__ == "__main__":
    main()
