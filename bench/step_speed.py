"""Training-step (or, with --inference, forward-only) throughput of a model in fp32 and bf16,
with and without channels-last, and optionally under torch.compile: the measurements behind
`--precision auto`, the channels-last default and leaving torch.compile off on the CPU.

    python bench/step_speed.py [--model simple_cnn] [--batch-size 64] [--compile]
    python bench/step_speed.py --model efficientnet_lite0 --image-size 224 --inference --steps 3
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cnnkit.models import create_model  # noqa: E402
from cnnkit.train.device import Precision  # noqa: E402
from common import print_machine  # noqa: E402


def images_per_second(
    model: nn.Module,
    precision: str,
    channels_last: bool,
    batch: int,
    size: int,
    steps: int,
    compile_model: bool,
    inference: bool = False,
) -> float:
    torch.manual_seed(0)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=layout)
    net = torch.compile(model) if compile_model else model
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=layout)
    y = torch.randint(0, 10, (batch,))
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    loss_fn = nn.CrossEntropyLoss()
    autocast = Precision(torch.device("cpu"), precision).autocast

    def step() -> None:
        if inference:
            with torch.no_grad(), autocast():
                net(x)
            return
        with autocast():
            loss = loss_fn(net(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    if inference:
        model.eval()
    for _ in range(2 if inference else 10):  # warm-up (and compilation) is not timed
        step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="simple_cnn")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--inference", action="store_true", help="forward passes only")
    args = parser.parse_args()
    print_machine()
    kind = "inference" if args.inference else "train"
    print(f"{args.model}, {args.image_size}px, batch {args.batch_size}, {args.steps} steps")
    print(f"| precision | channels-last | compiled | {kind} images/s |")
    print("|---|---|---|---|")
    for compiled in (False, True) if args.compile else (False,):
        for precision in ("fp32", "bf16"):
            for channels_last in (False, True):
                model = create_model(args.model, 10, (3, args.image_size, args.image_size))
                ips = images_per_second(
                    model,
                    precision,
                    channels_last,
                    args.batch_size,
                    args.image_size,
                    args.steps,
                    compiled,
                    args.inference,
                )
                print(f"| {precision} | {channels_last} | {compiled} | {ips:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
