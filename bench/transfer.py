"""Transfer learning with little data, on the real CIFAR-10: simple_cnn from scratch vs
ImageNet-pretrained EfficientNet-Lite0 with a frozen backbone (head only) vs fine-tuned, for
several training-set sizes (balanced, seeded), on a fixed balanced test subset.

    python bench/transfer.py --sizes 500,2000 --test-per-class 200
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cnnkit  # noqa: E402
from common import SHARED_CIFAR10, print_machine  # noqa: E402

RECIPES = {
    "scratch": dict(model="simple_cnn", epochs=30, batch_size=64, lr=1e-3),
    "head": dict(
        model="efficientnet_lite0", pretrained="imagenet", epochs=30, batch_size=64, lr=1e-3
    ),
    "finetune": dict(
        model="efficientnet_lite0",
        pretrained="imagenet",
        finetune=True,
        head_epochs=15,
        epochs=3,
        batch_size=32,
        lr=1e-3,
    ),
}


def balanced_files(split_dir: Path, per_class: int, seed: int) -> list[tuple[str, str]]:
    """`per_class` files of every class, chosen by a seeded shuffle of the sorted names."""
    rng = np.random.default_rng(seed)
    rows = []
    for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        files = sorted(class_dir.glob("*.png"))
        for i in rng.permutation(len(files))[:per_class]:
            rows.append((str(files[i]), class_dir.name))
    return rows


def write_csv(path: Path, train: list, test: list) -> Path:
    lines = ["path,label,split"]
    lines += [f"{p},{label},train" for p, label in train]
    lines += [f"{p},{label},test" for p, label in test]
    path.write_text("\n".join(lines) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED_CIFAR10))
    parser.add_argument("--sizes", default="500,2000,10000", help="training images (balanced)")
    parser.add_argument("--test-per-class", type=int, default=200, help="0: the full test set")
    parser.add_argument("--recipes", default="scratch,head,finetune")
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="also write the results as JSON here")
    args = parser.parse_args()
    machine = print_machine()
    data = Path(args.data)
    per_class_test = args.test_per_class or 10**9
    test = balanced_files(data / "test", per_class_test, seed=1234)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in (int(s) for s in args.sizes.split(",")):
            train = balanced_files(data / "train", size // 10, args.seed)
            csv = write_csv(Path(tmp) / f"cifar10-{size}.csv", train, test)
            for name in args.recipes.split(","):
                recipe = dict(RECIPES[name])
                if recipe["model"] != "simple_cnn":
                    recipe["input_size"] = args.input_size
                started = time.perf_counter()
                run = cnnkit.train(
                    data=str(csv),
                    val_split=0.1,
                    seed=args.seed,
                    project=tmp,
                    name=f"{name}-{size}",
                    progress=False,
                    **recipe,
                )
                row = {
                    "train_images": size,
                    "recipe": name,
                    "test_accuracy": run.metrics["test_accuracy"],
                    "test_images": run.metrics["test_images"],
                    "wall_seconds": time.perf_counter() - started,
                }
                results.append(row)
                print(json.dumps(row), flush=True)
    print(
        f"\ntest set: {len(test)} images ({args.test_per_class or 'all'} per class); "
        f"pretrained input {args.input_size} px"
    )
    print("| train images | recipe | test accuracy | wall time (s) |")
    print("|---|---|---|---|")
    for r in results:
        print(
            f"| {r['train_images']} | {r['recipe']} | {r['test_accuracy']:.2%} | "
            f"{r['wall_seconds']:.0f} |"
        )
    if args.out:
        Path(args.out).write_text(
            json.dumps({"machine": machine, "recipes": RECIPES, "results": results}, indent=2)
            + "\n"
        )


if __name__ == "__main__":
    main()
