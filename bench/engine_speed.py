"""The training loop's throughput through the public API, for comparing two versions of the
engine on the same machine: the classic CNN (and optionally fastnet_cpu) on real CIFAR-10,
images/s of each epoch's training steps as history.csv records them.

    python bench/engine_speed.py --epochs 3 --repeats 3
    PYTHONPATH=/path/to/old/checkout/src python bench/engine_speed.py   # the same, older code

Decoding is cached after the first run, and only the training steps' time counts (history's
`seconds`), so the figure is the step loop: batch slicing, augmentation, forward, backward,
the optimiser, the running totals and the progress bookkeeping.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cnnkit  # noqa: E402
from common import SHARED_CIFAR10, print_machine  # noqa: E402

RECIPES = {
    "simple_cnn": dict(model="simple_cnn", batch_size=64, optimizer="adam", lr=1e-3),
    "fastnet_cpu": dict(
        model="fastnet_cpu",
        batch_size=512,
        optimizer="sgd",
        lr=0.75,
        nesterov=True,
        flip=True,
        crop_padding=2,
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="simple_cnn", choices=sorted(RECIPES))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precision", default="fp32")
    args = parser.parse_args()
    info = print_machine()
    print(f"cnnkit from {Path(cnnkit.__file__).parent}", flush=True)
    rates = []
    for repeat in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            run = cnnkit.train(
                data=str(SHARED_CIFAR10),
                epochs=args.epochs,
                val_split=0.1,
                precision=args.precision,
                project=tmp,
                name="speed",
                progress=False,
                seed=repeat,
                **RECIPES[args.recipe],
            )
        # epoch 1 pays one-off costs (first kernels, caches): the later ones are the loop's pace
        rates += [row["images_per_second"] for row in run.history[1:]]
    result = {
        "recipe": args.recipe,
        "precision": args.precision,
        "images_per_second_median": round(statistics.median(rates)),
        "images_per_second": [round(r) for r in rates],
        **info,
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
