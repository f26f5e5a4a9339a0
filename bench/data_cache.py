"""Decoding and cache: how long until training starts on the 60,000 CIFAR-10 PNGs, the first
time (decode + scan + cache write) and the second time (cache hit).

    python bench/data_cache.py [--data ../shared/data/cifar10]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cnnkit.config import TrainConfig  # noqa: E402
from cnnkit.data import load_data  # noqa: E402
from cnnkit.engine.fit import Trainer  # noqa: E402
from common import SHARED_CIFAR10, print_machine  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED_CIFAR10))
    args = parser.parse_args()
    print_machine()
    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as runs:
        started = time.perf_counter()
        splits = load_data(args.data, cache_dir=cache, progress=False)
        cold = time.perf_counter() - started
        n = sum(len(s) for s in (splits.train, splits.val, splits.test) if s is not None)
        started = time.perf_counter()
        load_data(args.data, cache_dir=cache, progress=False)
        warm = time.perf_counter() - started
        # Time until the first training step: data (cached) + statistics + model + optimiser.
        os.environ["CNNKIT_CACHE"] = cache
        started = time.perf_counter()
        trainer = Trainer(
            TrainConfig(data=args.data, epochs=1, project=runs), Path(runs), progress=False
        )
        trainer.enter_stage(0)
        ready = time.perf_counter() - started
    print(f"images: {n}")
    print(f"first load (decode + scan + cache write): {cold:.2f} s")
    print(f"second load (cache hit): {warm:.2f} s")
    print(f"second run, from Trainer() to the first step: {ready:.2f} s")


if __name__ == "__main__":
    main()
