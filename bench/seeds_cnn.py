"""The classic CIFAR-10 recipe (simple_cnn, 10 epochs, batch 64, Adam 1e-3, no augmentation):
test accuracy and training images/s in fp32 and bf16, and, when a Python with TensorFlow is
given, the identical Keras model on the same arrays in the same run.

    python bench/seeds_cnn.py                              # cnnkit only
    python bench/seeds_cnn.py --keras-python /path/to/tf/venv/bin/python
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cnnkit  # noqa: E402
from common import SHARED_CIFAR10, print_machine  # noqa: E402


def run_cnnkit(data: str, precision: str, epochs: int, project: Path) -> dict:
    result = cnnkit.train(
        data=data,
        model="simple_cnn",
        epochs=epochs,
        batch_size=64,
        optimizer="adam",
        lr=1e-3,
        val_split=0.0,
        precision=precision,
        project=str(project),
        name=precision,
        progress=False,
    )
    history = result.history
    seconds = sum(row["seconds"] for row in history)
    images = sum(row["images_per_second"] * row["seconds"] for row in history)
    return {
        "framework": f"cnnkit {cnnkit.__version__} / torch {__import__('torch').__version__}",
        "precision": precision,
        "test_accuracy": result.metrics["test_accuracy"],
        "final_epoch_test_accuracy": history[-1]["val_accuracy"],
        "epoch_seconds": [row["seconds"] for row in history],
        "images_per_second": images / seconds,
    }


def run_keras(python: str, data: str, epochs: int) -> dict:
    splits = cnnkit.load_data(data, val_split=0.0, progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        arrays = Path(tmp) / "cifar10.npz"
        np.savez(
            arrays,
            x_train=splits.train.images.permute(0, 2, 3, 1).numpy(),
            y_train=splits.train.labels.numpy(),
            x_test=splits.test.images.permute(0, 2, 3, 1).numpy(),
            y_test=splits.test.labels.numpy(),
        )
        script = Path(__file__).with_name("keras_reference.py")
        out = subprocess.run(
            [python, str(script), str(arrays), str(epochs), "64"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED_CIFAR10))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--keras-python", help="a Python that has tensorflow/keras installed")
    parser.add_argument("--out", help="also write the results as JSON here")
    args = parser.parse_args()
    results = {"machine": print_machine(), "runs": []}
    with tempfile.TemporaryDirectory() as project:
        for precision in args.precisions.split(","):
            run = run_cnnkit(args.data, precision, args.epochs, Path(project))
            results["runs"].append(run)
            print(json.dumps(run), flush=True)
    if args.keras_python:
        keras = run_keras(args.keras_python, args.data, args.epochs)
        results["keras"] = keras
        print(json.dumps(keras), flush=True)
    print("\n| run | test accuracy | train images/s | s/epoch |")
    print("|---|---|---|---|")
    rows = [(f"cnnkit {r['precision']}", r) for r in results["runs"]]
    if "keras" in results:
        rows.append(("keras (same run)", results["keras"]))
    for label, r in rows:
        per_epoch = sum(r["epoch_seconds"]) / len(r["epoch_seconds"])
        print(
            f"| {label} | {r['test_accuracy']:.2%} | {r['images_per_second']:,.0f} | "
            f"{per_epoch:.1f} |"
        )
    if "keras" in results:
        for r in results["runs"]:
            ratio = r["images_per_second"] / results["keras"]["images_per_second"]
            print(f"cnnkit {r['precision']} / keras throughput: {ratio:.2f}x")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
