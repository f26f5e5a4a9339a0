"""Build src/cnnkit/data/samples/cifar10-sample from a CIFAR-10 PNG folder (run once).

Copies the first 200 training and first 50 test files (sorted by name) of each class, byte for
byte, so the sample shipped in the wheel is exactly a subset of the real data set.

    python tools/make_sample.py [--source ../shared/data/cifar10]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO.parent / "shared" / "data" / "cifar10"
DEST = REPO / "src" / "cnnkit" / "data" / "samples" / "cifar10-sample"
COUNTS = {"train": 200, "test": 50}

README = """cifar10-sample: a subset of CIFAR-10 bundled with cnnkit for demos and tests.

The first {train} training and first {test} test images (sorted by file name) of each of the 10
classes, copied byte for byte from a folder copy of CIFAR-10 (32x32 PNGs) by tools/make_sample.py.
CIFAR-10: Alex Krizhevsky, "Learning Multiple Layers of Features from Tiny Images", 2009,
https://www.cs.toronto.edu/~kriz/cifar.html
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--dest", type=Path, default=DEST)
    args = parser.parse_args(argv)
    if not (args.source / "train").is_dir():
        print(f"make_sample: no CIFAR-10 folder at {args.source}", file=sys.stderr)
        return 1
    if args.dest.exists():
        shutil.rmtree(args.dest)
    total = 0
    for split, count in COUNTS.items():
        for class_dir in sorted(p for p in (args.source / split).iterdir() if p.is_dir()):
            out = args.dest / split / class_dir.name
            out.mkdir(parents=True)
            for f in sorted(class_dir.glob("*.png"))[:count]:
                shutil.copyfile(f, out / f.name)
                total += 1
    (args.dest / "README.txt").write_text(README.format(**COUNTS))
    print(f"make_sample: copied {total} files to {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
