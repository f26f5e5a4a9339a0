"""onnxruntime against PyTorch eager on the same exported classifiers, in one run.

    python bench/export_speed.py --models resnet18,efficientnet_lite0 --batches 1,32 --threads 1,2

Each model is saved as a cnnkit checkpoint (efficientnet_lite0 with its ImageNet weights,
resnet18 randomly initialised: speed does not depend on the weights), exported with
`cnnkit export --dynamic-batch` (its parity check included), and timed at 224 px: the ONNX
file in onnxruntime (CPU provider, intra-op threads = --threads), its int8 form (cnnkit's
`quantize_onnx`, what `cnnkit export --int8` writes, calibrated on 32 photos of
../shared/data/coco128; timed only: these ImageNet heads' answers on photos are checked in
docs/benchmarks.md, not here), and the checkpoint's module in eager PyTorch: fp32 in the
faster of the two memory layouts (contiguous or channels-last, both timed), and bf16
autocast. Each cell is the median over --seconds of calls after three warm-up calls, on the
same normalised input. Prints one row per cell and the JSON of all.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cnnkit.data.preprocess import Preprocessing  # noqa: E402
from cnnkit.export import export_model  # noqa: E402
from cnnkit.export.parity import graph_input, parity_images  # noqa: E402
from cnnkit.export.quantize import quantize_onnx  # noqa: E402
from cnnkit.export.runtime import open_graph  # noqa: E402
from cnnkit.models import create_model, resolve_spec  # noqa: E402
from cnnkit.tasks.classify.predictor import Classifier  # noqa: E402
from common import print_machine  # noqa: E402

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco128" / "images"


def classifier(name: str) -> Classifier:
    if name == "efficientnet_lite0":
        return Classifier.from_pretrained(name, device="cpu", precision="fp32")
    spec = resolve_spec(name, pretrained="none")
    model = create_model(spec, num_classes=1000, input_size=(3, 224, 224))
    prep = Preprocessing(size=(224, 224), resize="crop", mean=IMAGENET[0], std=IMAGENET[1])
    classes = [f"class{i}" for i in range(1000)]
    return Classifier(model, classes, prep, "cpu", "fp32", spec)


def eager(module: torch.nn.Module, x: torch.Tensor, bf16: bool = False) -> None:
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
        module(x)


def median_seconds(call, seconds: float) -> float:
    for _ in range(3):
        call()
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 5:
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="resnet18,efficientnet_lite0")
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--seconds", type=float, default=6.0, help="timing per cell")
    parser.add_argument("--out", default="bench/results/export_speed.json")
    args = parser.parse_args()
    machine = print_machine()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            clf = classifier(name)
            checkpoint = clf.save(Path(tmp) / name / "best.pt")
            exported = export_model(checkpoint, "onnx", dynamic_batch=True)
            print(f"{name}: exported in {exported.seconds:.1f}s, parity {exported.parity}")
            photos, _ = parity_images(clf, [str(PHOTOS)], count=32)
            int8_path = exported.path.with_name("best.int8.onnx")
            quantize_onnx(exported.path, int8_path, graph_input(clf, photos, False))
            module = clf.model.eval()
            for threads in (int(t) for t in args.threads.split(",")):
                torch.set_num_threads(threads)
                runner, _ = open_graph(exported.path, threads=threads)
                int8_runner, _ = open_graph(int8_path, threads=threads)
                for batch in (int(b) for b in args.batches.split(",")):
                    x = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(0))
                    x_cl = x.contiguous(memory_format=torch.channels_last)

                    ort = median_seconds(functools.partial(runner, x), args.seconds)
                    int8 = median_seconds(functools.partial(int8_runner, x), args.seconds)
                    module = module.to(memory_format=torch.contiguous_format)
                    nchw = median_seconds(functools.partial(eager, module, x), args.seconds)
                    module = module.to(memory_format=torch.channels_last)
                    nhwc = median_seconds(functools.partial(eager, module, x_cl), args.seconds)
                    fp32 = min(nchw, nhwc)
                    with_bf16 = functools.partial(eager, module, x_cl, True)
                    bf16 = median_seconds(with_bf16, args.seconds)
                    row = {
                        "model": name,
                        "threads": threads,
                        "batch": batch,
                        "onnxruntime_ms": round(ort * 1000, 2),
                        "onnxruntime_int8_ms": round(int8 * 1000, 2),
                        "eager_fp32_contiguous_ms": round(nchw * 1000, 2),
                        "eager_fp32_channels_last_ms": round(nhwc * 1000, 2),
                        "eager_fp32_ms": round(fp32 * 1000, 2),
                        "eager_bf16_ms": round(bf16 * 1000, 2),
                        "ort_speedup_vs_fp32": round(fp32 / ort, 2),
                        "ort_int8_speedup_vs_fp32": round(fp32 / int8, 2),
                        "ort_speedup_vs_bf16": round(bf16 / ort, 2),
                    }
                    rows.append(row)
                    print(
                        f"{name:20s} threads {threads} batch {batch:3d}: onnxruntime"
                        f" {row['onnxruntime_ms']:8.2f} ms  int8 {row['onnxruntime_int8_ms']:8.2f}"
                        f" ms  eager fp32 {row['eager_fp32_ms']:8.2f} ms"
                        f" bf16 {row['eager_bf16_ms']:8.2f} ms  ORT {row['ort_speedup_vs_fp32']}x"
                        f" fp32, int8 {row['ort_int8_speedup_vs_fp32']}x fp32",
                        flush=True,
                    )
    result = {"machine": machine, "command": " ".join(sys.argv), "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
