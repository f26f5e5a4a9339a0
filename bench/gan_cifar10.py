"""cnnkit's dcgan-cifar10 preset against PyTorch's examples/dcgan recipe, each trained for the
same minutes of training steps on the same CIFAR-10 in one invocation, then both judged by
fd_lite0 / kid_lite0 on the same real test images, beside the real-vs-real floor.

The reference is examples/dcgan's recipe written anew from its description (not copied): its
networks with ngf = ndf = 64 and nz = 100, N(0, 0.02) initialisation, a Sigmoid discriminator
with BCELoss (real label 1, fake 0, the generator trained towards 1), Adam lr 2e-4 with betas
(0.5, 0.999) for both, batch 64, fp32. The example resizes images to 64 px; here its networks
drop one up- and one down-sampling block to make and judge 32 x 32 images directly (the same
depth rule as cnnkit's dcgan), so neither side pays for 4x the pixels. It trains on all 50,000
training images; the preset holds 10% out for its per-epoch distance. The example samples with
its generator in training mode (batch statistics); both modes are measured for it and the
better one is compared.

    python bench/gan_cifar10.py --minutes 30 [--data ../shared/data/cifar10] [--fd-images 1000]
    python bench/gan_cifar10.py --minutes 4 --skip-reference --set gan_loss=hinge  # a variant
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cnnkit  # noqa: E402
from cnnkit.data import load_data  # noqa: E402
from cnnkit.tasks.generate.distance import distances, features  # noqa: E402
from cnnkit.tasks.generate.sample import save_grid, to_model_range, to_uint8  # noqa: E402
from common import SHARED_CIFAR10, parse_sets, print_machine  # noqa: E402

NZ, NGF, NDF, BATCH = 100, 64, 64, 64


def reference_generator() -> nn.Sequential:
    """examples/dcgan's generator, one block shorter: (B, 100, 1, 1) -> (B, 3, 32, 32)."""

    def up(cin: int, cout: int, stride: int, padding: int) -> list[nn.Module]:
        conv = nn.ConvTranspose2d(cin, cout, 4, stride, padding, bias=False)
        return [conv, nn.BatchNorm2d(cout), nn.ReLU(True)]

    return nn.Sequential(
        *up(NZ, NGF * 4, 1, 0),  # 4 x 4
        *up(NGF * 4, NGF * 2, 2, 1),  # 8 x 8
        *up(NGF * 2, NGF, 2, 1),  # 16 x 16
        nn.ConvTranspose2d(NGF, 3, 4, 2, 1, bias=False),  # 32 x 32
        nn.Tanh(),
    )


def reference_discriminator() -> nn.Sequential:
    """examples/dcgan's discriminator, one block shorter: (B, 3, 32, 32) -> (B, 1, 1, 1)."""
    return nn.Sequential(
        nn.Conv2d(3, NDF, 4, 2, 1, bias=False),  # 16 x 16
        nn.LeakyReLU(0.2, True),
        nn.Conv2d(NDF, NDF * 2, 4, 2, 1, bias=False),  # 8 x 8
        nn.BatchNorm2d(NDF * 2),
        nn.LeakyReLU(0.2, True),
        nn.Conv2d(NDF * 2, NDF * 4, 4, 2, 1, bias=False),  # 4 x 4
        nn.BatchNorm2d(NDF * 4),
        nn.LeakyReLU(0.2, True),
        nn.Conv2d(NDF * 4, 1, 4, 1, 0, bias=False),
        nn.Sigmoid(),
    )


def reference_init(m: nn.Module) -> None:
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def train_reference(images: torch.Tensor, minutes: float, seed: int) -> tuple[nn.Module, dict]:
    """The example's loop over uint8 training images for `minutes` of training steps."""
    torch.manual_seed(seed)
    net_g, net_d = reference_generator(), reference_discriminator()
    net_g.apply(reference_init)
    net_d.apply(reference_init)
    criterion = nn.BCELoss()
    opt_d = torch.optim.Adam(net_d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(net_g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    spent, steps, epochs = 0.0, 0, 0
    while spent < 60 * minutes:
        order = torch.randperm(len(images))
        for i in range(0, len(order) - BATCH + 1, BATCH):
            started = time.perf_counter()
            real = to_model_range(images[order[i : i + BATCH]])
            net_d.zero_grad()
            ones, zeros = torch.ones(BATCH), torch.zeros(BATCH)
            loss_real = criterion(net_d(real).view(-1), ones)
            loss_real.backward()
            fake = net_g(torch.randn(BATCH, NZ, 1, 1))
            loss_fake = criterion(net_d(fake.detach()).view(-1), zeros)
            loss_fake.backward()
            opt_d.step()
            net_g.zero_grad()
            loss_g = criterion(net_d(fake).view(-1), ones)
            loss_g.backward()
            opt_g.step()
            spent += time.perf_counter() - started
            steps += 1
            if spent >= 60 * minutes:
                break
        epochs += 1
        d_loss = (loss_real + loss_fake).item()
        print(
            f"reference: {steps} steps, {spent / 60:.1f} min, D {d_loss:.3f} G {loss_g.item():.3f}",
            flush=True,
        )
    return net_g, {"steps": steps, "images_seen": steps * BATCH, "train_seconds": spent}


@torch.no_grad()
def reference_images(net_g: nn.Module, n: int, seed: int, train_mode: bool) -> torch.Tensor:
    net_g.train(train_mode)  # the example samples in training mode (batch statistics)
    z = torch.randn(n, NZ, 1, 1, generator=torch.Generator().manual_seed(seed))
    return torch.cat([to_uint8(net_g(z[i : i + BATCH])) for i in range(0, n, BATCH)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED_CIFAR10))
    parser.add_argument("--minutes", type=float, default=30.0, help="training minutes each")
    parser.add_argument("--fd-images", type=int, default=1000, help="generated = real images")
    parser.add_argument("--set", action="append", default=[], help="preset override KEY=VALUE")
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--project", default="runs/bench-gan")
    parser.add_argument("--out", default="bench/results/gan_cifar10.json")
    parser.add_argument("--grids", default="docs", help="folder for the two sample grids")
    args = parser.parse_args()
    machine = print_machine()
    overrides = parse_sets(args.set)
    print(f"cnnkit: preset dcgan-cifar10 for {args.minutes:g} minutes; overrides {overrides}")
    run = cnnkit.train(
        preset="dcgan-cifar10",
        data=args.data,
        time_limit=args.minutes,
        project=args.project,
        progress=False,
        report=False,
        **overrides,
    )
    seen = sum(r["images_per_second"] * r["seconds"] for r in run.history)
    results: dict = {
        "machine": machine,
        "command": " ".join(sys.argv),
        "minutes": args.minutes,
        "cnnkit": {
            "run": str(run.run_dir),
            "epochs": len(run.history),
            "best_epoch": run.metrics["best_epoch"],
            "images_seen": round(seen),
            "train_seconds": round(sum(r["seconds"] for r in run.history), 1),
            "precision": run.metrics["precision"],
            "overrides": overrides,
        },
    }
    reference = None
    if not args.skip_reference:
        train = load_data(args.data, val_split=0.0, splits=("train",), progress=False).train
        reference, info = train_reference(train.images, args.minutes, seed=0)
        results["reference"] = info

    n = args.fd_images
    test = load_data(args.data, val_split=0.0, splits=("test",), progress=False).test
    order = torch.randperm(len(test), generator=torch.Generator().manual_seed(0))
    first = features(test.images[order[:n]])
    floor = distances(features(test.images[order[n : 2 * n]]), first)
    results["floor"] = floor.named()
    results["n"] = n
    generator = cnnkit.load(run.run_dir)
    images, _ = generator.generate_tensor(n, seed=1)
    results["cnnkit"].update(distances(features(images), first).named())
    grids = Path(args.grids)
    suffix = "-".join(f"{k}={v}" for k, v in overrides.items())
    save_grid(images[:64], grids / f"gan_cifar10_cnnkit{'-' + suffix if suffix else ''}.png")
    if reference is not None:
        for mode, train_mode in (("train_mode", True), ("eval_mode", False)):
            made = reference_images(reference, n, seed=1, train_mode=train_mode)
            results["reference"][mode] = distances(features(made), first).named()
            if train_mode:
                save_grid(made[:64], grids / "gan_cifar10_reference.png")
    print(json.dumps(results, indent=2))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
