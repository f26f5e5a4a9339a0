"""Does a class-conditional GAN's output help a classifier trained on a small CIFAR-10 subset?

The benchmark builds, in a temp folder, a small training set (`--per-class` real images of each
class from ../shared/data/cifar10/train), a validation set of other real training images
(`--val-per-class`) and the whole real test set (10,000). It trains `dcgan_conditional` with
the dcgan-cifar10 preset on the small set for `--gan-minutes`, writes `--fake-per-class`
generated images of each class as an image folder (`cnnkit generate RUN --n N --out DIR`), and
trains the same classifier three ways, every run scored on the real test set:

  real          the small set alone, E epochs
  real+gen      the small set plus the generated folder, E epochs
  real, longer  the small set alone for as many steps as real+gen took

    python bench/gan_augment.py [--per-class 500] [--gan-minutes 8] [--fake-per-class 500]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cnnkit  # noqa: E402
from common import SHARED_CIFAR10, print_machine  # noqa: E402


def copy_subset(source: Path, target: Path, start: int, count: int | None) -> int:
    """source/<class>/ files [start, start + count) in sorted order -> target/<class>/."""
    copied = 0
    for folder in sorted(p for p in source.iterdir() if p.is_dir()):
        files = sorted(folder.iterdir())
        chosen = files[start : None if count is None else start + count]
        (target / folder.name).mkdir(parents=True, exist_ok=True)
        for file in chosen:
            shutil.copy(file, target / folder.name / file.name)
            copied += 1
    return copied


def classifier(data: Path, project: Path, name: str, args: argparse.Namespace, epochs: int):
    return cnnkit.train(
        data=str(data),
        model=args.model,
        epochs=epochs,
        batch_size=64,
        optimizer="adam",
        lr=2e-3,
        schedule="cosine",
        augment="basic",
        seed=args.seed,
        project=str(project),
        name=name,
        report=False,
        progress=False,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED_CIFAR10))
    parser.add_argument("--per-class", type=int, default=500, help="real training images")
    parser.add_argument("--val-per-class", type=int, default=50)
    parser.add_argument("--gan-minutes", type=float, default=8.0)
    parser.add_argument("--fake-per-class", type=int, default=500)
    parser.add_argument("--fd-images", type=int, default=50, help="per validation epoch")
    parser.add_argument("--model", default="simple_cnn", help="the classifier")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="bench/results/gan_augment.json")
    args = parser.parse_args()
    machine = print_machine()
    data = Path(args.data)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        small = root / "small"
        n_train = copy_subset(data / "train", small / "train", 0, args.per_class)
        copy_subset(data / "train", small / "val", args.per_class, args.val_per_class)
        copy_subset(data / "test", small / "test", 0, None)
        print(f"small set: {n_train} training images, {args.val_per_class}/class val, real test")
        gan = cnnkit.train(
            preset="dcgan-cifar10",
            model="dcgan_conditional",
            data=str(small),
            time_limit=args.gan_minutes,
            epochs=100_000,  # the time limit ends it
            fd_images=args.fd_images,
            seed=args.seed,
            project=str(root / "runs"),
            name="gan",
            progress=False,
        )
        fake = root / "fake"
        n_fake = args.fake_per_class * 10
        command = [sys.executable, "-m", "cnnkit", "generate", str(gan.run_dir), "--n",
                   str(n_fake), "--seed", str(args.seed), "--out", str(fake)]  # fmt: skip
        subprocess.run(command, check=True)
        mixed = root / "mixed"
        shutil.copytree(small, mixed)
        for folder in fake.iterdir():
            for file in folder.iterdir():
                shutil.copy(file, mixed / "train" / folder.name / f"gen-{file.name}")
        steps_ratio = (n_train + n_fake) / n_train
        runs = {
            "real": classifier(small, root / "runs", "real", args, args.epochs),
            "real+gen": classifier(mixed, root / "runs", "mixed", args, args.epochs),
            "real, longer": classifier(
                small, root / "runs", "longer", args, round(args.epochs * steps_ratio)
            ),
        }
        rows = {
            name: {
                "epochs": r.metrics["epochs"],
                "test_accuracy": r.metrics.get("test_accuracy"),
                "best_val_accuracy": r.metrics.get("best_val_accuracy"),
                "training_seconds": r.metrics["timing"]["training"],
            }
            for name, r in runs.items()
        }
        gan_metrics = json.loads((gan.run_dir / "metrics.json").read_text())
    result = {
        "machine": machine,
        "args": vars(args),
        "gan": {
            key: gan_metrics.get(key)
            for key in ("epochs_done", "best_val_fd_lite0", "test_fd_lite0", "test_kid_lite0")
        },
        "classifier": rows,
    }
    print(json.dumps(result, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    for name, row in rows.items():
        print(f"{name:<14} test accuracy {row['test_accuracy']:.2%} ({row['epochs']} epochs)")


if __name__ == "__main__":
    main()
