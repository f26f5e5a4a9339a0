"""Detector step times on this machine: seconds per training step (forward + backward + SGD
step, fp32 and bf16 autocast) and eval images/s, for choosing a detection recipe.

    python bench/detect_speed.py --arch fcos retinanet --backbone mobilenet_v2 --size 320 416

Real Penn-Fudan photos (../shared/data/pennfudan), letterboxed to the square size with their
pedestrian boxes from the instance masks; ImageNet backbones from the shipped files, with the
detector's default freezing (the backbone's last 3 stride stages train, BatchNorm frozen).

OMP_WAIT_POLICY=PASSIVE is set unless given: on a CPU shared with other jobs, OpenMP's spinning
threads made a 2-thread FCOS step 10x slower (about 10 s instead of 1 s at 320 px).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts OpenMP

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cnnkit.tasks.detect.dataset import BoxTarget  # noqa: E402
from cnnkit.tasks.detect.models import build_detector, detector_spec  # noqa: E402
from common import print_machine  # noqa: E402

PENNFUDAN = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "pennfudan"


def letterboxed(name: str, size: int) -> tuple[torch.Tensor, BoxTarget]:
    """One Penn-Fudan photo scaled into a size x size square (grey padding) and its boxes."""
    image = Image.open(PENNFUDAN / "PNGImages" / f"{name}.png").convert("RGB")
    mask = np.array(Image.open(PENNFUDAN / "PedMasks" / f"{name}_mask.png"))
    boxes = []
    for instance in np.unique(mask)[1:]:
        ys, xs = np.nonzero(mask == instance)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    scale = size / max(image.size)
    width, height = round(image.width * scale), round(image.height * scale)
    canvas = Image.new("RGB", (size, size), (114, 114, 114))
    canvas.paste(image.resize((width, height), Image.Resampling.BILINEAR), (0, 0))
    pixels = torch.from_numpy(np.array(canvas)).permute(2, 0, 1).float() / 255
    target = BoxTarget(torch.tensor(boxes, dtype=torch.float32) * scale, [0] * len(boxes))
    return pixels, target


def time_config(
    arch: str, backbone: str, size: int, batch: int, steps: int, fpn_channels: int | None
) -> dict:
    names = sorted(p.stem for p in (PENNFUDAN / "PNGImages").glob("*.png"))[: batch * 2]
    data = [letterboxed(n, size) for n in names]
    images = torch.stack([d[0] for d in data])
    targets = [d[1] for d in data]
    torch.manual_seed(0)
    spec = detector_spec(f"{arch}_{backbone}", fpn_channels=fpn_channels)
    model = build_detector(spec, 1, image_size=size)
    optimizer = torch.optim.SGD(model.param_groups(0.01), lr=0.01, momentum=0.9)
    result = {}
    for precision in ("fp32", "bf16"):
        model.train()
        times = []
        for step in range(steps + 1):
            i = (step % 2) * batch
            started = time.perf_counter()
            with torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
                losses = model(images[i : i + batch], targets[i : i + batch])
            optimizer.zero_grad()
            sum(losses.values()).backward()
            optimizer.step()
            times.append(time.perf_counter() - started)
        result[f"train_{precision}_s"] = float(np.median(times[1:]))
    model.eval()
    times = []
    with torch.no_grad():
        for step in range(steps + 1):
            i = (step % 2) * batch
            started = time.perf_counter()
            model(images[i : i + batch])
            times.append(time.perf_counter() - started)
    result["eval_images_per_s"] = batch / float(np.median(times[1:]))
    result["params_m"] = sum(p.numel() for p in model.parameters()) / 1e6
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", nargs="+", default=["fcos", "retinanet", "ssdlite", "fasterrcnn"])
    parser.add_argument("--backbone", nargs="+", default=["mobilenet_v2", "efficientnet_lite0"])
    parser.add_argument("--size", nargs="+", type=int, default=[320, 416])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--fpn-channels", type=int, default=None, help="default: the models'")
    parser.add_argument("--steps", type=int, default=3, help="timed steps after 1 warm-up")
    args = parser.parse_args()
    print_machine()
    print(
        f"threads {torch.get_num_threads()}  OMP_WAIT_POLICY {os.environ['OMP_WAIT_POLICY']}  "
        f"load {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    print("arch       backbone            size  train fp32 s  train bf16 s  eval img/s  params M")
    for arch in args.arch:
        for backbone in args.backbone:
            for size in args.size:
                channels = None if arch == "ssdlite" else args.fpn_channels
                r = time_config(arch, backbone, size, args.batch_size, args.steps, channels)
                print(
                    f"{arch:<10} {backbone:<19} {size:>4}  {r['train_fp32_s']:>12.2f}  "
                    f"{r['train_bf16_s']:>12.2f}  {r['eval_images_per_s']:>10.1f}  "
                    f"{r['params_m']:>8.1f}   (load {os.getloadavg()[0]:.1f})",
                    flush=True,
                )


if __name__ == "__main__":
    main()
