"""Training-step (or, with --inference, forward-only) throughput of a model in fp32 and bf16,
with and without channels-last, and optionally under torch.compile: the measurements behind
`--precision auto`, the channels-last default and leaving torch.compile off on the CPU.

    python bench/step_speed.py [--model simple_cnn] [--batch-size 64] [--compile]
    python bench/step_speed.py --model efficientnet_lite0 --image-size 224 --inference --steps 3
    python bench/step_speed.py --peak --profile --optimizer-step   # where a step's time goes
    python bench/step_speed.py --model fastnet_muon --batch-size 2000 --optimizer muon \
        --precision bf16 --layout channels-last --steps 20

--peak times large matrix products (the machine's practical fp32 and bf16 peak); --profile
splits a bf16 channels-last training step by operator with torch.profiler and divides the
convolutions' FLOPs by their time; --optimizer-step times Adam's update alone, per
implementation (for-loop, foreach, fused), and Nesterov SGD's.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cnnkit.config import TrainConfig  # noqa: E402
from cnnkit.engine.device import Precision  # noqa: E402
from cnnkit.engine.optim import build_optimizer  # noqa: E402
from cnnkit.models import create_model  # noqa: E402
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
    optimizer_name: str = "adam",
) -> float:
    torch.manual_seed(0)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=layout)
    net = torch.compile(model) if compile_model else model
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=layout)
    y = torch.randint(0, 10, (batch,))
    # momentum and Nesterov as the speed presets use them (Adam ignores both)
    cfg = TrainConfig(optimizer=optimizer_name, lr=1e-3, momentum=0.85, nesterov=True)
    optimizer = build_optimizer(model.parameters(), cfg)
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


def timed(fn, repeats: int, warmup: int = 3) -> float:
    """Mean seconds per call of fn after a warm-up."""
    for _ in range(warmup):
        fn()
    started = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - started) / repeats


def matmul_peak() -> None:
    """GFLOP/s of a 2048 x 2048 matrix product: the practical peak convolutions can approach."""
    n = 2048
    for dtype in (torch.float32, torch.bfloat16):
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        seconds = timed(lambda a=a, b=b: a @ b, 10)
        name = str(dtype).removeprefix("torch.")
        print(f"matmul {n}x{n} {name}: {2 * n**3 / seconds / 1e9:,.0f} GFLOP/s")


def conv_flops(model: nn.Module, x: torch.Tensor) -> tuple[float, float]:
    """(forward, backward) multiply-add FLOPs of the model's convolutions for input x; the
    backward pass computes the input's gradient for every convolution but the first."""
    forward = backward = 0.0
    convs = []

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        k = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
        convs.append(2.0 * output.numel() * k)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    for i, flops in enumerate(convs):
        forward += flops
        backward += flops * (1 if i == 0 else 2)
    return forward, backward


def profile_step(model: nn.Module, batch: int, size: int, steps: int) -> None:
    """Where a bf16 channels-last training step's time goes, by operator."""
    from torch.profiler import ProfilerActivity, profile

    model = model.to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))
    optimizer = build_optimizer(model.parameters(), TrainConfig(optimizer="adam", lr=1e-3))
    loss_fn = nn.CrossEntropyLoss()
    autocast = Precision(torch.device("cpu"), "bf16").autocast

    def step() -> None:
        with autocast():
            loss = loss_fn(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step_s = timed(step, steps, warmup=10)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in rows)
    print(f"bf16 channels-last step: {step_s * 1e3:.2f} ms ({batch / step_s:,.0f} images/s)")
    print("| operator | share of the step (self time) | ms per step |")
    print("|---|---|---|")
    for e in rows[:10]:
        ms = e.self_cpu_time_total / steps / 1e3
        print(f"| {e.key} | {e.self_cpu_time_total / total:.1%} | {ms:.2f} |")
    conv_us = {e.key: e.self_cpu_time_total / steps for e in rows}
    fwd_s = conv_us.get("aten::mkldnn_convolution", 0.0) / 1e6
    bwd_s = conv_us.get("aten::convolution_backward", 0.0) / 1e6
    fwd_flops, bwd_flops = conv_flops(model, x)
    if fwd_s and bwd_s:
        print(
            f"convolutions: forward {fwd_flops / fwd_s / 1e9:,.0f} GFLOP/s, backward "
            f"{bwd_flops / bwd_s / 1e9:,.0f} GFLOP/s; convolutions alone would allow "
            f"{batch / (fwd_s + bwd_s):,.0f} images/s"
        )


def optimizer_step_ms(model: nn.Module, repeats: int) -> None:
    """Adam's and Nesterov SGD's update alone, per implementation, with gradients in place."""
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    builders = {
        "Adam": lambda **kw: torch.optim.Adam(model.parameters(), 1e-3, **kw),
        "SGD nesterov": lambda **kw: torch.optim.SGD(
            model.parameters(), 0.1, momentum=0.9, nesterov=True, **kw
        ),
    }
    impls = {"for-loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}
    for name, build in builders.items():
        for impl, kwargs in impls.items():
            optimizer = build(**kwargs)
            ms = timed(optimizer.step, repeats, warmup=10) * 1e3
            print(f"{name} step, {impl}: {ms:.3f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="simple_cnn")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--inference", action="store_true", help="forward passes only")
    parser.add_argument("--peak", action="store_true", help="matrix-product GFLOP/s")
    parser.add_argument("--profile", action="store_true", help="the bf16 step by operator")
    parser.add_argument("--optimizer-step", action="store_true", help="optimiser update alone")
    parser.add_argument("--optimizer", default="adam", help="the training step's optimiser")
    parser.add_argument("--precision", choices=("fp32", "bf16", "both"), default="both")
    parser.add_argument("--layout", choices=("channels-last", "contiguous", "both"), default="both")
    args = parser.parse_args()
    print_machine()
    size = (3, args.image_size, args.image_size)
    if args.peak or args.profile or args.optimizer_step:
        if args.peak:
            matmul_peak()
        if args.profile:
            profile_step(create_model(args.model, 10, size), args.batch_size, size[1], args.steps)
        if args.optimizer_step:
            optimizer_step_ms(create_model(args.model, 10, size), args.steps)
        return
    kind = "inference" if args.inference else "train"
    print(
        f"{args.model}, {args.image_size}px, batch {args.batch_size}, {args.steps} steps, "
        f"{args.optimizer}"
    )
    precisions = ("fp32", "bf16") if args.precision == "both" else (args.precision,)
    layouts = {"both": (False, True), "channels-last": (True,), "contiguous": (False,)}
    print(f"| precision | channels-last | compiled | {kind} images/s |")
    print("|---|---|---|---|")
    for compiled in (False, True) if args.compile else (False,):
        for precision in precisions:
            for channels_last in layouts[args.layout]:
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
                    args.optimizer,
                )
                print(f"| {precision} | {channels_last} | {compiled} | {ips:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
