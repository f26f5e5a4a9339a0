"""Speedrun a preset: train it n times (seeds 0..n-1) through cnnkit.train, the real product,
and print each run's test accuracy and wall time, then mean and standard deviation.

    python bench/speedrun.py --preset cifar10-cpu --seeds 3
    python bench/speedrun.py --preset cifar10-94 --seeds 5 --data /path/to/cifar10 --device cuda \
        --warmup --set compile=true
    python bench/speedrun.py --preset cifar10-cpu --set epochs=4 --set lr=0.6

Accuracy is the final test accuracy with the preset's test-time augmentation (plain when it has
none). Two times per run:

- timed: what airbench's clock covers, from the run's metrics.json ("timing"): the whitening
  init, the training steps and the final test evaluation with TTA; not data loading, the
  per-epoch validation, checkpoint writes or plots (airbench evaluates each epoch off the clock
  too), nor compile warm-up (with --warmup). This is the figure to compare with airbench.
- wall: the whole cnnkit.train() call minus the data loading, which is timed beforehand on the
  same (cached) data and subtracted.

The load average of the machine at the start and end of each run is printed too, since other
jobs on a small CPU slow it down.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cnnkit  # noqa: E402
from cnnkit.config import build_config  # noqa: E402
from cnnkit.presets import get_preset  # noqa: E402
from common import SHARED_CIFAR10, parse_sets, print_machine  # noqa: E402

NOT_SHOWN = ("seed", "project", "name")  # set per run


def load_seconds(data: str, val_split: float, data_root: str | None) -> float:
    """How long loading the data takes (run twice: the first call fills the decode cache)."""
    cnnkit.load_data(data, val_split=val_split, data_root=data_root, progress=False)
    started = time.perf_counter()
    cnnkit.load_data(data, val_split=val_split, data_root=data_root, progress=False)
    return time.perf_counter() - started


def _cpu_seconds() -> float:
    """User + system CPU time of this process so far (all its threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_once(overrides: dict[str, Any], seed: int, project: Path, load_s: float) -> dict:
    cfg = build_config(overrides={**overrides, "seed": seed})
    load_before = os.getloadavg()[0]
    cpu_before = _cpu_seconds()
    started = time.perf_counter()
    result = cnnkit.train(config=cfg, progress=False)
    total = time.perf_counter() - started
    cpu = _cpu_seconds() - cpu_before
    m = result.metrics
    accuracy = m.get("test_accuracy_tta", m["test_accuracy"])
    return {
        "seed": seed,
        "test_accuracy": accuracy,
        "test_accuracy_plain": m["test_accuracy"],
        "tta": cfg.tta,
        "best_epoch": m["best_epoch"],  # the test accuracy is best.pt's: this epoch's weights
        "epochs": m["epochs"],
        "wall_seconds": total - load_s,
        # as airbench times: init + training steps + final test evaluation (metrics.json)
        "timed_seconds": m["timing"]["timed"],
        "timing": m["timing"],
        "train_call_seconds": total,
        "cpu_seconds": cpu,
        "epoch_seconds": [row["seconds"] for row in result.history],
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "run_dir": str(result.run_dir),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cifar10-cpu")
    parser.add_argument("--seeds", type=int, default=1, help="runs, with seeds 0..n-1")
    parser.add_argument("--first-seed", type=int, default=0, help="start the seeds here")
    parser.add_argument("--data", default=None, help="default: ../shared/data/cifar10 if there")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--project", default=None, help="run folders (default: a temp folder)")
    parser.add_argument("--out", default=None, help="also write the results as JSON here")
    parser.add_argument(
        "--warmup",
        action="store_true",
        help="first an untimed run of the same length, so torch.compile's kernels (for every "
        "graph: fastnet's whitening bias freezes after 3 epochs, a recompile) and cuDNN's "
        "autotuning are ready before the clock starts (as airbench times)",
    )
    args = parser.parse_args()

    machine = print_machine()
    preset = get_preset(args.preset)
    data = args.data or (str(SHARED_CIFAR10) if SHARED_CIFAR10.is_dir() else "cifar10")
    overrides: dict[str, Any] = {"preset": preset.name, "data": data, **parse_sets(args.set)}
    if args.device:
        overrides["device"] = args.device
    if args.data_root:
        overrides["data_root"] = args.data_root
    cfg = build_config(overrides=overrides)
    print(f"preset {preset.name}: {preset.description}")
    shown = {k: v for k, v in cfg.to_dict().items() if v is not None and k not in NOT_SHOWN}
    print(f"resolved config: {shown}", flush=True)
    load_s = load_seconds(cfg.data, cfg.val_split, cfg.data_root)
    print(f"data loading (subtracted from wall time): {load_s:.1f}s", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        project = Path(args.project or tmp)
        overrides["project"] = str(project)
        if args.warmup:
            started = time.perf_counter()
            cnnkit.train(config=build_config(overrides=overrides), progress=False)
            print(f"warm-up run (not counted): {time.perf_counter() - started:.1f}s", flush=True)
        runs = []
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            run = run_once(overrides, seed, project, load_s)
            runs.append(run)
            print(
                f"seed {seed}: test accuracy {run['test_accuracy']:.2%} "
                f"(plain {run['test_accuracy_plain']:.2%}, tta {run['tta']})  "
                f"timed {run['timed_seconds']:.1f}s  wall {run['wall_seconds']:.1f}s  "
                f"CPU {run['cpu_seconds']:.0f}s  "
                f"load average {run['load_average']}",
                flush=True,
            )
    accs = [r["test_accuracy"] for r in runs]
    walls = [r["wall_seconds"] for r in runs]
    timed = [r["timed_seconds"] for r in runs]

    def spread(values: list[float]) -> float:
        return statistics.stdev(values) if len(values) > 1 else 0.0

    print(
        f"{preset.name}: test accuracy {statistics.mean(accs):.2%} +- {spread(accs):.2%} "
        f"over {len(accs)} seed(s); timed {statistics.mean(timed):.2f}s +- {spread(timed):.2f}s; "
        f"wall {statistics.mean(walls):.1f}s +- {spread(walls):.1f}s"
    )
    if args.out:
        summary = {"preset": preset.name, "machine": machine, "config": cfg.to_dict(), "runs": runs}
        Path(args.out).write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
