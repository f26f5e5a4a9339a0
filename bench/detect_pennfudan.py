"""Penn-Fudan pedestrians from ImageNet weights only: cnnkit's detect-pennfudan preset against
the torchvision tutorial's approach (Faster R-CNN on the same MobileNetV2 backbone, trained
with torchvision's own API for the same wall time), in one run, on the same images.

    python bench/detect_pennfudan.py --test 30 --seed 0

The 120 shared images are split (seeded) into a test part that neither side trains on and a
training part (cnnkit holds out its own validation images from it, as a user's run would).
Both are scored on the test part with the same mAP (torchmetrics' COCO evaluation).
The tutorial side follows torchvision's "TorchVision Object Detection Finetuning Tutorial",
option 2 (a new backbone): MobileNetV2's ImageNet features (1280 channels) as the backbone,
one feature map, anchors of 32-512 px at ratios 0.5/1/2, RoIAlign 7x7, SGD lr 0.005 momentum
0.9 weight decay 5e-4, StepLR (3 epochs, 0.1), batch 2, random horizontal flips, the model's
default input size (shorter side 800); it trains until the same wall time is spent.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts OpenMP

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cnnkit  # noqa: E402
from cnnkit.tasks.detect.formats import read_detection  # noqa: E402
from cnnkit.tasks.detect.inference import original_targets  # noqa: E402
from cnnkit.tasks.detect.metrics import detection_metrics  # noqa: E402
from common import parse_sets, pennfudan_split, print_machine  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def run_cnnkit(
    train: Path, test: Path, project: Path, preset: str, overrides: dict[str, object]
) -> dict:
    started = time.perf_counter()
    run = cnnkit.train(
        preset=preset, data=str(train), project=str(project), name="cnnkit", **overrides
    )
    seconds = time.perf_counter() - started
    detector = cnnkit.load(run.best)
    report = detector.evaluate(str(test), out_dir=project / "cnnkit-test", progress=False)
    return {
        "preset": preset,
        "overrides": overrides,
        "train_seconds": round(seconds, 1),
        "training_steps_seconds": run.metrics["timing"]["training"],
        "epochs": run.metrics["epochs_done"],
        "best_epoch": run.metrics["best_epoch"],
        **{k: report.to_dict()[k] for k in ("map", "map_50", "map_75", "mar_100")},
        "val_map_by_epoch": [
            None if row.get("val_map") in (None, "") else round(float(row["val_map"]), 3)
            for row in run.history
        ],
        "inference": inference_speed(run.best, test),
    }


def inference_speed(checkpoint: Path, test: Path, repeats: int = 3) -> dict:
    """Images/s of ``cnnkit.load(best).predict_paths`` on the test photos (decoding, letterbox,
    the model, NMS and scaling back included) at batch 1 and 8, fp32 and bf16 autocast; the
    best of ``repeats`` passes after a warm-up one, and the bf16 model's test mAP beside it."""
    paths = sorted(str(p) for p in (test / "PNGImages").glob("*.png"))
    out: dict[str, object] = {"images": len(paths), "threads": torch.get_num_threads()}
    for precision in ("fp32", "bf16"):
        detector = cnnkit.load(checkpoint, precision=precision)
        for batch in (1, 8):
            detector.predict_paths(paths[:batch], batch_size=batch)  # warm-up
            best = float("inf")
            for _ in range(repeats):
                started = time.perf_counter()
                detector.predict_paths(paths, batch_size=batch)
                best = min(best, time.perf_counter() - started)
            out[f"{precision}_batch{batch}_images_per_s"] = round(len(paths) / best, 2)
        if precision == "bf16":
            with tempfile.TemporaryDirectory() as tmp:
                report = detector.evaluate(str(test), out_dir=tmp, progress=False)
            out["bf16_map"] = round(report.to_dict()["map"], 4)
            out["bf16_map_50"] = round(report.to_dict()["map_50"], 4)
    return out


# ---- the tutorial's approach, with torchvision's own API ------------------------------------
def tutorial_model() -> torch.nn.Module:
    import torchvision
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.rpn import AnchorGenerator

    from cnnkit.tasks.detect.backbones import mobilenet_v2_weights_file

    net = torchvision.models.mobilenet_v2()
    state = torch.load(mobilenet_v2_weights_file(), map_location="cpu", weights_only=True)
    net.load_state_dict(state)
    backbone = net.features
    backbone.out_channels = 1280
    anchors = AnchorGenerator(sizes=((32, 64, 128, 256, 512),), aspect_ratios=((0.5, 1.0, 2.0),))
    pooler = torchvision.ops.MultiScaleRoIAlign(
        featmap_names=["0"], output_size=7, sampling_ratio=2
    )
    return FasterRCNN(backbone, num_classes=2, rpn_anchor_generator=anchors, box_roi_pool=pooler)


def run_tutorial(train: Path, test: Path, budget: float, seed: int) -> dict:
    """Train until `budget` seconds have passed (checked after each step), then score."""
    torch.manual_seed(seed)
    data = read_detection(train, val_split=0.0).train
    model = tutorial_model()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.005, momentum=0.9, weight_decay=0.0005)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.1)
    generator = torch.Generator().manual_seed(seed)
    started, epochs, steps = time.perf_counter(), 0, 0
    while time.perf_counter() - started < budget:
        model.train()
        order = torch.randperm(len(data), generator=generator).tolist()
        for start in range(0, len(order), 2):
            images, targets = [], []
            for i in order[start : start + 2]:
                image, boxes = data.images[i].float() / 255, data.targets[i].boxes.clone()
                if torch.rand((), generator=generator) < 0.5:  # the tutorial's flip
                    width = image.shape[-1]
                    image = image.flip(-1)
                    boxes[:, [0, 2]] = width - boxes[:, [2, 0]]
                images.append(image)
                targets.append({"boxes": boxes, "labels": data.targets[i].labels + 1})
            losses = model(images, targets)
            optimizer.zero_grad()
            sum(losses.values()).backward()
            optimizer.step()
            steps += 1
            if time.perf_counter() - started >= budget:
                break
        else:
            epochs += 1
            scheduler.step()
    seconds = time.perf_counter() - started
    test_data = read_detection(test, val_split=0.0).train
    model.eval()
    predictions = []
    with torch.no_grad():
        for image in test_data.images:
            out = model([image.float() / 255])[0]
            predictions.append({**out, "labels": out["labels"] - 1})
    scaled = [
        {**p, "boxes": p["boxes"] * torch.tensor([sx, sy, sx, sy])}
        for p, (sx, sy) in zip(
            predictions, (test_data.stored_scale(i) for i in range(len(test_data))), strict=True
        )
    ]
    metrics = detection_metrics(scaled, original_targets(test_data), test_data.classes)
    return {
        "train_seconds": round(seconds, 1),
        "epochs_completed": epochs,
        "steps": steps,
        **{k: metrics.to_dict()[k] for k in ("map", "map_50", "map_75", "mar_100")},
    }


@contextlib.contextmanager
def keep_or_temp(keep: str | None) -> Iterator[str]:
    """``keep`` (a new folder, left in place) or a temporary folder removed afterwards."""
    if keep is None:
        with tempfile.TemporaryDirectory() as tmp:
            yield tmp
        return
    if Path(keep).exists():
        raise SystemExit(f"--keep {keep}: already there; name a new folder")
    Path(keep).mkdir(parents=True)
    yield keep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--test", type=int, default=30, help="images held out for the test")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--preset", default="detect-pennfudan")
    parser.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE", help="override preset values"
    )
    parser.add_argument("--skip-tutorial", action="store_true")
    parser.add_argument("--out", default=str(RESULTS / "detect_pennfudan.json"))
    parser.add_argument(
        "--keep", metavar="DIR", help="work in DIR (kept: the split and the runs) not a temp dir"
    )
    args = parser.parse_args()
    machine = print_machine()
    with keep_or_temp(args.keep) as tmp:
        train, test = pennfudan_split(Path(tmp) / "data", args.test, args.seed)
        ours = run_cnnkit(train, test, Path(tmp) / "runs", args.preset, parse_sets(args.set))
        print(f"cnnkit {args.preset}: {json.dumps(ours)}", flush=True)
        result = {"machine": machine, "test_images": args.test, "seed": args.seed, "cnnkit": ours}
        if not args.skip_tutorial:
            theirs = run_tutorial(train, test, ours["train_seconds"], args.seed)
            print(f"torchvision tutorial (same wall time): {json.dumps(theirs)}", flush=True)
            result["tutorial"] = theirs
            result["map_50_ratio"] = round(ours["map_50"] / max(theirs["map_50"], 1e-9), 2)
            result["map_ratio"] = round(ours["map"] / max(theirs["map"], 1e-9), 2)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
