"""Streaming memory: the resident memory of an epoch streamed from 10,000 and from 100,000
images, in tar shards this benchmark writes (CIFAR-10 PNGs repeated) into a temp folder.

    python bench/stream_memory.py [--sizes 10000,100000] [--workers 2]

Each size runs in a fresh process that scans the shards and streams one epoch while a thread
samples, every 0.1 s, the main process's RSS and the proportional set size (PSS: shared pages
counted once) of the main process and its DataLoader workers together; the peaks are printed.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHARED_CIFAR10, print_machine  # noqa: E402

SHARD_IMAGES = 10_000


def write_shards(out: Path, n: int, data: Path) -> None:
    """n samples in WebDataset's layout (`cnnkit shard`'s), CIFAR-10 PNG bytes repeated."""
    classes = sorted(p.name for p in (data / "train").iterdir())
    pngs = [
        (label, f.read_bytes())
        for label, c in enumerate(classes)
        for f in sorted((data / "train" / c).iterdir())[:500]
    ]
    out.mkdir(parents=True)
    names = []
    for start in range(0, n, SHARD_IMAGES):
        names.append(f"train-{len(names):06d}.tar")
        with tarfile.open(out / names[-1], "w") as tar:
            for i in range(start, min(start + SHARD_IMAGES, n)):
                label, png = pngs[i % len(pngs)]
                for name, payload in ((f"{i:07d}.png", png), (f"{i:07d}.cls", b"%d" % label)):
                    info = tarfile.TarInfo(name)
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
    index = {
        "format": "cnnkit-shards",
        "version": 1,
        "classes": classes,
        "splits": {"train": {"shards": names, "images": n}},
    }
    (out / "dataset.json").write_text(json.dumps(index))


def measure(shards: str, workers: int, batch_size: int) -> None:
    """(in the child) scan, stream one epoch, print the peaks as JSON."""
    import torch

    from cnnkit.data.stream import StreamEpoch
    from cnnkit.data.stream_splits import shard_sources

    torch.set_num_threads(1)
    me = psutil.Process()
    peaks = {"rss_main": 0, "pss_total": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            try:
                procs = [me, *me.children(recursive=True)]
                pss = sum(p.memory_full_info().pss for p in procs)
                peaks["pss_total"] = max(peaks["pss_total"], pss)
                peaks["rss_main"] = max(peaks["rss_main"], me.memory_info().rss)
            except psutil.Error:
                pass
            time.sleep(0.1)

    before = me.memory_info().rss
    started = time.perf_counter()
    source = shard_sources(shards)[1]["train"]
    source.size = (32, 32)
    scan = time.perf_counter() - started
    after_scan = me.memory_info().rss
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    order = torch.randperm(len(source), generator=torch.Generator().manual_seed(0))
    started, seen = time.perf_counter(), 0
    for images, _, _ in StreamEpoch(source, batch_size, order, workers=workers):
        seen += len(images)
    seconds = time.perf_counter() - started
    done.set()
    thread.join()
    print(
        json.dumps(
            {
                "images": seen,
                "scan_s": scan,
                "epoch_s": seconds,
                "rss_before_scan": before,
                "rss_after_scan": after_scan,
                **peaks,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED_CIFAR10))
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        return measure(args.measure, args.workers, args.batch_size)
    print_machine()
    mib = 2**20
    print(f"batch {args.batch_size}, {args.workers} workers; peaks over one streamed epoch")
    for n in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            shards = Path(tmp) / "shards"
            write_shards(shards, n, Path(args.data))
            gib = sum(f.stat().st_size for f in shards.iterdir()) / 2**30
            child = [sys.executable, __file__, "--measure", str(shards)]
            child += ["--workers", str(args.workers), "--batch-size", str(args.batch_size)]
            out = subprocess.run(child, check=True, capture_output=True, text=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
        print(
            f"  {r['images']:7d} images ({gib:.2f} GiB of shards): scan {r['scan_s']:.1f}s, "
            f"epoch {r['epoch_s']:.1f}s ({r['images'] / r['epoch_s']:.0f} img/s); "
            f"main RSS {r['rss_before_scan'] / mib:.0f} MiB before the scan, "
            f"{r['rss_after_scan'] / mib:.0f} after, peak {r['rss_main'] / mib:.0f}; "
            f"peak PSS with workers {r['pss_total'] / mib:.0f} MiB",
            flush=True,
        )


if __name__ == "__main__":
    main()
