"""Overfitting made visible: simple_cnn on the full CIFAR-10 as the tutorials train it, vs with
`--augment standard` and dropout. Reports training accuracy (best.pt re-evaluated on the clean,
un-augmented training images), test accuracy, and the gap between them. best.pt is chosen on a
seeded 10% validation split, so the test set stays unseen until the end.

    python bench/overfitting.py [--epochs 10,20]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cnnkit  # noqa: E402
from common import SHARED_CIFAR10, print_machine  # noqa: E402

RECIPES = {
    "tutorial": dict(model="simple_cnn", batch_size=64, lr=1e-3),
    "augment standard + dropout 0.5": dict(
        model="simple_cnn", batch_size=64, lr=1e-3, augment="standard", dropout=0.5
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED_CIFAR10))
    parser.add_argument("--epochs", default="10", help="comma-separated epoch counts")
    parser.add_argument("--out", help="also write the results as JSON here")
    args = parser.parse_args()
    machine = print_machine()
    # the same seeded split the runs below make: 45,000 train, 5,000 validation
    train_images = cnnkit.load_data(args.data, val_split=0.1, seed=0, progress=False).train
    rows = []
    with tempfile.TemporaryDirectory() as project:
        for epochs in (int(e) for e in args.epochs.split(",")):
            for name, recipe in RECIPES.items():
                run = cnnkit.train(
                    data=args.data,
                    epochs=epochs,
                    val_split=0.1,
                    seed=0,
                    project=project,
                    name=f"{len(rows)}",
                    progress=False,
                    **recipe,
                )
                train_acc = cnnkit.load(run.best).evaluate(train_images, progress=False).top1
                test_acc = run.metrics["test_accuracy"]
                row = {
                    "recipe": name,
                    "epochs": epochs,
                    "train_accuracy": train_acc,
                    "test_accuracy": test_acc,
                    "gap": train_acc - test_acc,
                    "best_epoch": run.metrics["best_epoch"],
                    # what the tutorials plot: the last epoch's running training accuracy
                    # (augmented, dropout on) against its validation accuracy and loss
                    "last_train_accuracy": run.history[-1]["train_accuracy"],
                    "last_val_accuracy": run.history[-1]["val_accuracy"],
                    "last_val_loss": run.history[-1]["val_loss"],
                    "lowest_val_loss_epoch": min(run.history, key=lambda r: r["val_loss"])["epoch"],
                    "wall_seconds": run.metrics["wall_seconds"],
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    print("\n| recipe | epochs (best) | train accuracy | test accuracy | gap | wall (s) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['recipe']} | {r['epochs']} ({r['best_epoch']}) | {r['train_accuracy']:.2%} | "
            f"{r['test_accuracy']:.2%} | {r['gap'] * 100:.1f} points | {r['wall_seconds']:.0f} |"
        )
    print("\n| recipe | epochs | last epoch: train acc / val acc / val loss | lowest val loss |")
    print("|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['recipe']} | {r['epochs']} | {r['last_train_accuracy']:.2%} / "
            f"{r['last_val_accuracy']:.2%} / {r['last_val_loss']:.3f} | "
            f"epoch {r['lowest_val_loss_epoch']} |"
        )
    if args.out:
        Path(args.out).write_text(json.dumps({"machine": machine, "results": rows}, indent=2))


if __name__ == "__main__":
    main()
