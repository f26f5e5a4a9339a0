"""Streaming throughput: images/s of an epoch of uint8 batches from the same CIFAR-10 subset,
streamed from the folder, streamed from tar shards, sliced from memory (after the up-front
decode), and torchvision's ImageFolder + DataLoader; same batch size and worker count.

    python bench/stream_throughput.py [--per-class 1000] [--batch-size 256] [--workers 2]

Only the data pipeline is timed (no model): what a training step would be fed, per second.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder
from torchvision.transforms import PILToTensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cnnkit.data import iterate_batches, load_data  # noqa: E402
from cnnkit.data.shards import write_shards  # noqa: E402
from cnnkit.data.sources import scan_folder  # noqa: E402
from cnnkit.data.stream import StreamEpoch  # noqa: E402
from cnnkit.data.stream_splits import list_source, shard_sources  # noqa: E402
from common import SHARED_CIFAR10, print_machine  # noqa: E402


def link_subset(src: Path, dst: Path, per_class: int) -> int:
    """dst/<class>/ holding symbolic links to the first `per_class` training PNGs of each."""
    n = 0
    for folder in sorted((src / "train").iterdir()):
        (dst / folder.name).mkdir(parents=True)
        for f in sorted(folder.iterdir())[:per_class]:
            os.symlink(f, dst / folder.name / f.name)
            n += 1
    return n


def timed(epoch) -> tuple[float, int]:
    started, seen = time.perf_counter(), 0
    for batch in epoch():
        seen += len(batch[0])
    return time.perf_counter() - started, seen


def best_of(runs: int, epoch) -> tuple[float, int]:
    return min(timed(epoch) for _ in range(runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED_CIFAR10))
    parser.add_argument("--per-class", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2, help="epochs timed each; the best kept")
    args = parser.parse_args()
    print_machine()
    torch.set_num_threads(1)
    b, w = args.batch_size, args.workers
    with tempfile.TemporaryDirectory() as tmp:
        folder, shards = Path(tmp) / "images", Path(tmp) / "shards"
        n = link_subset(Path(args.data), folder, args.per_class)
        started = time.perf_counter()
        write_shards(folder, shards, shard_size=5000, progress=False)
        print(f"{n} images; cnnkit shard took {time.perf_counter() - started:.1f}s")
        found = scan_folder(folder)
        from_folder = list_source(found.lists["train"], found.classes)
        from_shards = shard_sources(shards)[1]["train"]
        for source in (from_folder, from_shards):
            source.size = (32, 32)
        g = torch.Generator().manual_seed(0)
        results: dict[str, tuple[float, int]] = {}

        def stream(source):
            return lambda: StreamEpoch(source, b, torch.randperm(n, generator=g), workers=w)

        results["stream: folder"] = best_of(args.epochs, stream(from_folder))
        results["stream: shards"] = best_of(args.epochs, stream(from_shards))
        started = time.perf_counter()
        data = load_data(folder, cache_dir=Path(tmp) / "cache", val_split=0.0, progress=False)
        decode = time.perf_counter() - started
        train = data.train

        def memory():
            return iterate_batches(train, b, shuffle=True, generator=g, with_indices=True)

        results["in memory (epoch after the decode)"] = best_of(args.epochs, memory)
        results["in memory (up-front decode, 2 processes)"] = (decode, n)
        folder_set = ImageFolder(str(folder), transform=PILToTensor())

        def torchvision():
            return DataLoader(folder_set, batch_size=b, shuffle=True, num_workers=w)

        results["torchvision ImageFolder + DataLoader"] = best_of(args.epochs, torchvision)
    base = n / results["torchvision ImageFolder + DataLoader"][0]
    print(f"batch {b}, {w} workers, best of {args.epochs} epochs; images/s (x torchvision's)")
    for name, (seconds, seen) in results.items():
        rate = seen / seconds
        print(f"  {name:42s} {rate:10.0f} img/s  {seconds:6.2f}s  x{rate / base:.2f}")


if __name__ == "__main__":
    main()
