"""Peak memory and time of turning a segmenter's output into a class map at a large photo's own
size (cnnkit.tasks.segment.batch.classes_in_window): in bands of rows (what cnnkit does) against
one piece (the band size set past the photo, which is what it did before).

    python bench/segment_resize_memory.py [--classes 2 21] [--size 5000x8000] [--canvas 576]
    PYTHONPATH=<an older checkout>/src python bench/segment_resize_memory.py --as-is

"bands of rows" and --as-is call classes_in_window with its default band size (--as-is only
that, so an older checkout, from before bands of rows, can be measured the same way); "one
piece" sets the band size past the photo.

Each measurement runs in a fresh process, so its peak resident memory (ru_maxrss) is its own:
the growth over the process's peak before the call is reported, with the class map's own
size (int64, 8 bytes a pixel) for comparison. The network's output is random probabilities
on a canvas of --canvas px; only the resizing is measured, not the network.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = """
import json, resource, sys, time, torch
from cnnkit.tasks.segment.batch import classes_in_window, window
classes, height, width, canvas, band = (int(a) for a in sys.argv[1:6])
torch.set_num_threads(2)
scores = torch.rand(classes, canvas, canvas, generator=torch.Generator().manual_seed(0))
win = window(height, width, canvas)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
found = classes_in_window(scores, win, **({"band_values": band} if band else {}))
seconds = time.perf_counter() - started
grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(json.dumps({"grew_mb": grew / 1024, "seconds": seconds, "map_mb": found.numel() * 8 / 2**20}))
"""


def measure(classes: int, height: int, width: int, canvas: int, band: int) -> dict:
    args = [sys.executable, "-c", CHILD, *map(str, (classes, height, width, canvas, band))]
    done = subprocess.run(args, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--classes", type=int, nargs="*", default=[2, 21])
    parser.add_argument("--size", default="5000x8000", help="the photo's HEIGHTxWIDTH")
    parser.add_argument("--canvas", type=int, default=576)
    parser.add_argument("--as-is", action="store_true", help="call it without a band size")
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.lower().split("x"))
    print(f"photo {height}x{width} ({height * width / 1e6:.0f} M pixels), canvas {args.canvas}")
    for classes in args.classes:
        ways = [("as is", 0)] if args.as_is else [("bands of rows", 0), ("one piece", 1 << 62)]
        for name, band in ways:
            r = measure(classes, height, width, args.canvas, band)
            print(
                f"{classes:>3} classes, {name:<13}: peak +{r['grew_mb']:,.0f} MB (the class map "
                f"itself {r['map_mb']:,.0f} MB), {r['seconds']:.2f} s"
            )


if __name__ == "__main__":
    main()
