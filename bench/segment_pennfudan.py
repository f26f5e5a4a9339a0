"""Penn-Fudan person segmentation from ImageNet weights only: cnnkit's segment-pennfudan preset
against torchvision's references/segmentation recipe (FCN on the same MobileNetV2 backbone,
its loss, schedule and augmentation, see bench/segment_reference.py) trained for the same wall
time, in one run, on the same images.

    python bench/segment_pennfudan.py --test 30 --seed 0

The 120 shared images are split (seeded, the same split as bench/detect_pennfudan.py) into a
test part that neither side trains on and a training part (cnnkit holds out its own validation
images from it, as a user's run would; the reference trains on all of it, as its recipe has no
validation-based choice). Both are scored on the test part at each photo's own size with the
same confusion-matrix metrics (cnnkit.tasks.segment.metrics): person IoU, mIoU over
background and person, pixel accuracy.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts OpenMP

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cnnkit  # noqa: E402
from cnnkit.tasks.segment.formats import read_segmentation  # noqa: E402
from cnnkit.tasks.segment.metrics import segmentation_metrics  # noqa: E402
from common import parse_sets, pennfudan_split, print_machine  # noqa: E402
from segment_reference import predict_reference, train_reference  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def scores(metrics) -> dict:
    return {
        "person_iou": round(metrics.per_class_iou["person"], 4),
        "background_iou": round(metrics.per_class_iou["background"], 4),
        "miou": round(metrics.miou, 4),
        "pixel_accuracy": round(metrics.pixel_accuracy, 4),
        "dice": round(metrics.dice, 4),
    }


def run_cnnkit(
    train: Path, test: Path, project: Path, preset: str, overrides: dict[str, object]
) -> dict:
    started = time.perf_counter()
    run = cnnkit.train(
        preset=preset, data=str(train), project=str(project), name="cnnkit", **overrides
    )
    seconds = time.perf_counter() - started
    segmenter = cnnkit.load(run.best)
    report = segmenter.evaluate(str(test), out_dir=project / "cnnkit-test", progress=False)
    flipped = segmenter.evaluate(
        str(test), out_dir=project / "cnnkit-tta", tta="flip", progress=False
    )
    return {
        "preset": preset,
        "overrides": overrides,
        "train_seconds": round(seconds, 1),
        "training_steps_seconds": run.metrics["timing"]["training"],
        "epochs": run.metrics["epochs_done"],
        "best_epoch": run.metrics["best_epoch"],
        "precision": run.metrics["precision"],
        **scores(report.metrics),
        "flip_tta": scores(flipped.metrics),
        "val_miou_by_epoch": [
            None if row.get("val_miou") in (None, "") else round(float(row["val_miou"]), 3)
            for row in run.history
        ],
        "inference": inference_speed(run.best, test),
    }


def inference_speed(checkpoint: Path, test: Path, repeats: int = 2) -> dict:
    """Images/s of ``cnnkit.load(best).predict_paths`` on the test photos (decoding, letterbox,
    the model and the upsampling back to each photo's size included), fp32 and bf16, batch 4;
    the best of ``repeats`` passes after a warm-up one."""
    paths = sorted(str(p) for p in (test / "PNGImages").glob("*.png"))
    out: dict[str, object] = {"images": len(paths), "threads": torch.get_num_threads()}
    for precision in ("fp32", "bf16"):
        segmenter = cnnkit.load(checkpoint, precision=precision)
        segmenter.predict_paths(paths[:4])  # warm-up
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            segmenter.predict_paths(paths, batch_size=4)
            best = min(best, time.perf_counter() - started)
        out[f"{precision}_batch4_images_per_s"] = round(len(paths) / best, 2)
    return out


def run_reference(train: Path, test: Path, budget: float, seed: int, base_size: int) -> dict:
    data = read_segmentation(train, val_split=0.0).train
    model, info = train_reference(data, budget, seed=seed, base_size=base_size)
    test_data = read_segmentation(test, val_split=0.0).train
    predicted = predict_reference(model, test_data.images, base_size=base_size)
    metrics = segmentation_metrics(predicted, test_data.masks, test_data.classes)
    return {**info, **scores(metrics)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--test", type=int, default=30, help="images held out for the test")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--preset", default="segment-pennfudan")
    parser.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE", help="override preset values"
    )
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument(
        "--reference-base-size", type=int, default=520, help="the references' base_size (520)"
    )
    parser.add_argument("--out", default=str(RESULTS / "segment_pennfudan.json"))
    args = parser.parse_args()
    machine = print_machine()
    with tempfile.TemporaryDirectory() as tmp:
        train, test = pennfudan_split(Path(tmp) / "data", args.test, args.seed)
        ours = run_cnnkit(train, test, Path(tmp) / "runs", args.preset, parse_sets(args.set))
        print(f"cnnkit {args.preset}: {json.dumps(ours)}", flush=True)
        result = {"machine": machine, "test_images": args.test, "seed": args.seed, "cnnkit": ours}
        if not args.skip_reference:
            theirs = run_reference(
                train, test, ours["train_seconds"], args.seed, args.reference_base_size
            )
            print(f"torchvision references (same wall time): {json.dumps(theirs)}", flush=True)
            result["reference"] = theirs
            for key in ("person_iou", "miou"):
                result[f"{key}_ratio"] = round(ours[key] / max(theirs[key], 1e-9), 3)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
