"""A GAN training step's speed in fp32 and bf16 on this machine: the measurement behind the
dcgan-cifar10 preset's precision (transposed convolutions in bf16 were reported slower on CPUs).

It times cnnkit's own step (the engine's two named optimisations: D's update, then G's) on the
bundled CIFAR-10 sample, alternating the precisions over several rounds so that load from
other processes falls on both alike, and prints the median images per second of each.

    python bench/gan_step_speed.py [--model dcgan] [--batch-size 128] [--steps 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cnnkit.config import TrainConfig  # noqa: E402
from cnnkit.engine.fit import Trainer  # noqa: E402
from cnnkit.engine.loop import EpochProgress, run_epoch  # noqa: E402
from common import print_machine  # noqa: E402


def trainer_for(precision: str, args: argparse.Namespace, folder: str) -> Trainer:
    cfg = TrainConfig(
        data="cifar10-sample",
        model=args.model,
        batch_size=args.batch_size,
        lr=2e-4,
        precision=precision,
        gan_loss=args.gan_loss,
        spectral_norm=args.spectral_norm,
        report=False,
    )
    trainer = Trainer(cfg, Path(folder), progress=False)
    trainer.enter_stage(0)
    return trainer


def images_per_second(trainer: Trainer, steps: int) -> float:
    """Images per second over `steps` training steps, after 2 warm-up steps."""
    rates = []
    for count in (2, steps):
        progress = EpochProgress()
        step, make_batches = trainer.task.epoch(trainer.model, 0, progress)
        started = time.perf_counter()
        run_epoch(
            step,
            make_batches,
            trainer.optimizations,
            trainer.generator,
            progress,
            trainer.device,
            should_stop=lambda p=progress, c=count: p.step >= c,
        )
        rates.append(progress.seen / (time.perf_counter() - started))
    return rates[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="dcgan")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--gan-loss", default=None)
    parser.add_argument("--spectral-norm", action="store_true", default=None)
    args = parser.parse_args()
    print_machine()
    with tempfile.TemporaryDirectory() as folder:
        trainers = {p: trainer_for(p, args, folder) for p in ("fp32", "bf16")}
        rates: dict[str, list[float]] = {p: [] for p in trainers}
        for _ in range(args.rounds):
            for name, trainer in trainers.items():
                rates[name].append(images_per_second(trainer, args.steps))
    print(
        f"{args.model} batch {args.batch_size}, loss {args.gan_loss or 'bce'}"
        f"{', spectral norm' if args.spectral_norm else ''}: one step = D update + G update"
    )
    for name, values in rates.items():
        shown = ", ".join(f"{v:.0f}" for v in values)
        print(f"  {name}: median {statistics.median(values):.0f} img/s  (rounds: {shown})")


if __name__ == "__main__":
    main()
