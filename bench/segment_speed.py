"""Training-step time of cnnkit's segmenters on this machine: model x input size x precision.

    python bench/segment_speed.py --models lraspp,deeplabv3,fcn --sizes 384,512 --batch 8

Each cell is the median of ``--steps`` timed steps (forward, cross-entropy, backward, SGD
update) after two warm-up steps, on random images and masks, with the backbone's ImageNet
weights and BatchNorm as training uses them. Prints one row per cell and the JSON of all.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cnnkit.engine.device import Precision  # noqa: E402
from cnnkit.tasks.segment.losses import segmentation_losses  # noqa: E402
from cnnkit.tasks.segment.models import build_segmenter  # noqa: E402
from common import print_machine  # noqa: E402


def step_seconds(name: str, size: int, batch: int, precision: str, steps: int) -> float:
    cpu = torch.device("cpu")
    model = build_segmenter(name, 2, image_size=size).to(memory_format=torch.channels_last)
    model.default_trainable_blocks = "all"
    model.freeze("all")
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    amp = Precision(cpu, precision)
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=generator)
    images = images.contiguous(memory_format=torch.channels_last)
    masks = torch.randint(0, 2, (batch, size, size), generator=generator)
    times = []
    for i in range(steps + 2):
        start = time.perf_counter()
        with amp.autocast():
            logits = model(images)
        loss = segmentation_losses(logits, masks)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if i >= 2:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="lraspp,deeplabv3,fcn")
    parser.add_argument("--sizes", default="384,512")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print_machine()
    rows = []
    for name in args.models.split(","):
        for size in (int(s) for s in args.sizes.split(",")):
            for precision in args.precisions.split(","):
                seconds = step_seconds(name, size, args.batch, precision, args.steps)
                rows.append(
                    {
                        "model": name,
                        "size": size,
                        "precision": precision,
                        "batch": args.batch,
                        "step_s": round(seconds, 3),
                        "images_per_s": round(args.batch / seconds, 2),
                    }
                )
                print(
                    f"{name:<28} {size:>4} px  {precision:<4}  {seconds:6.3f} s/step  "
                    f"{args.batch / seconds:6.2f} img/s",
                    flush=True,
                )
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
