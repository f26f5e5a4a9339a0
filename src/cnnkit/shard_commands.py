"""`cnnkit shard`: an image folder or CSV list -> tar shards in WebDataset's layout, a few lines
over cnnkit.data.shards.write_shards."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

from cnnkit.data.shards import DEFAULT_SHARD_SIZE, write_shards


def cmd_shard(args: argparse.Namespace) -> int:
    summary = write_shards(args.source, args.out, shard_size=args.shard_size)
    if summary.skipped:
        first = "; ".join(f"{_shown(p, args.source)}: {r}" for p, r in summary.skipped[:3])
        more = f"; and {len(summary.skipped) - 3} more" if len(summary.skipped) > 3 else ""
        print(f"left out {len(summary.skipped)} unreadable file(s): {first}{more}")
    total = sum(summary.images.values())
    shards = sum(len(files) for files in summary.shards.values())
    print(f"wrote {total} images in {shards} shards to {summary.out}")
    return 0


def _shown(path: str, source: str) -> str:
    """A left-out file as the user finds it: its path inside the source folder (a.png in two
    class folders is two files), else as the list gave it."""
    folder = source if os.path.isdir(source) else os.path.dirname(source) or "."
    inside = os.path.relpath(path, folder)
    return path if inside.startswith(os.pardir) else inside


def add_shard_parser(command: Callable[..., argparse.ArgumentParser]) -> None:
    p = command(
        "shard",
        cmd_shard,
        "write an image folder (train/ val/ test/ of class folders) or CSV list as tar shards"
        " in WebDataset's layout (<split>-000000.tar of <key>.png + <key>.cls, and"
        " dataset.json), for `cnnkit train --data SHARDS/` to stream",
    )
    p.add_argument("source", help="a folder of class folders or a CSV list")
    p.add_argument("--out", required=True, help="a new or empty folder for the shards")
    p.add_argument(
        "--shard-size",
        type=int,
        default=DEFAULT_SHARD_SIZE,
        help=f"images per shard ({DEFAULT_SHARD_SIZE})",
    )
