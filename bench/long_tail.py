"""Class imbalance on a long-tailed CIFAR-10: balanced accuracy without and with each remedy.

    python bench/long_tail.py --ratio 100 --epochs 15

The benchmark writes a CSV list (in a temporary folder; ../shared/data is only read) of a
long-tailed training set drawn from ../shared/data/cifar10/train: class i keeps
5000 * ratio^(-i/9) images (the first of each sorted folder), so airplane keeps 5,000 and truck
50 at 100:1 (Cui et al. 2019's CIFAR-10-LT profile), plus the whole balanced test set. Then
three runs of the same recipe (simple_cnn, Adam, standard augmentation, seed 0): plain
cross-entropy, --class-weights auto, --sampler balanced. Each is scored on the 10,000 test
images by `cnnkit evaluate`: top-1, balanced accuracy (equal to top-1 here: the test set is
balanced), macro F1 and the tail classes' recall.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cnnkit  # noqa: E402
from common import SHARED_CIFAR10, print_machine  # noqa: E402

REMEDIES = {"none": {}, "class weights auto": {"class_weights": "auto"}}
REMEDIES["sampler balanced"] = {"sampler": "balanced"}


def write_list(root: Path, ratio: float, out: Path) -> dict[str, int]:
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    kept = {}
    with open(out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "split"])
        for i, name in enumerate(classes):
            files = sorted((root / "train" / name).glob("*.png"))
            n = max(1, round(5000 * ratio ** (-i / (len(classes) - 1))))
            kept[name] = n
            writer.writerows([str(p), name, "train"] for p in files[:n])
            writer.writerows(
                [str(p), name, "test"] for p in sorted((root / "test" / name).glob("*.png"))
            )
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ratio", type=float, default=100.0)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--out", default="bench/results/long_tail.json")
    args = parser.parse_args()
    machine = print_machine()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        listing = Path(tmp) / "cifar10_lt.csv"
        kept = write_list(SHARED_CIFAR10, args.ratio, listing)
        print(f"training images per class: {kept}", flush=True)
        for remedy, options in REMEDIES.items():
            started = time.perf_counter()
            run = cnnkit.train(
                data=str(listing),
                model="simple_cnn",
                epochs=args.epochs,
                batch_size=128,
                optimizer="adam",
                lr=2e-3,
                schedule="cosine",
                augment="standard",
                val_split=0.1,
                seed=0,
                project=str(Path(tmp) / "runs"),
                name=remedy.replace(" ", "-"),
                progress=False,
                **options,
            )
            seconds = time.perf_counter() - started
            report = cnnkit.load(run.run_dir).evaluate(str(listing), split="test", progress=False)
            tail = list(kept)[-3:]
            recall = dict(zip(report.classes, report.recall, strict=True))
            row = {
                "remedy": remedy,
                "top1": round(report.top1, 4),
                "balanced_accuracy": round(report.balanced_accuracy, 4),
                "macro_f1": round(report.macro_f1, 4),
                "tail_recall": {name: round(recall[name], 3) for name in tail},
                "train_seconds": round(seconds, 1),
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    result = {
        "machine": machine,
        "command": " ".join(sys.argv),
        "ratio": args.ratio,
        "kept": kept,
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
