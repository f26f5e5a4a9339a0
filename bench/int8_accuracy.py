"""What `cnnkit export --int8` costs in accuracy, measured on the sample's test images.

    python bench/int8_accuracy.py

Trains two small classifiers on the bundled cifar10-sample (seeded): EfficientNet-Lite0 from
its ImageNet weights (a head epoch, then one fine-tuning epoch at 64 px) and simple_cnn from
scratch (6 epochs). Each is exported as fp32 ONNX and as int8 ONNX (calibrated on 64 images
of the run's data, checked on 64 others: the export's own parity check; for a named dataset
that data is its test split, so 64 of the 500 images scored below also calibrated the int8
file), then the checkpoint (fp32) and both files are evaluated with `cnnkit evaluate` on the
sample's test split. Accuracy only: timings are bench/export_speed.py's.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cnnkit  # noqa: E402
from cnnkit.export import export_model  # noqa: E402
from common import print_machine  # noqa: E402

SETUPS = {
    "efficientnet_lite0 (ImageNet, fine-tuned)": {
        "model": "efficientnet_lite0",
        "pretrained": "imagenet",
        "finetune": True,
        "head_epochs": 1,
        "epochs": 1,
        "input_size": 64,
        "batch_size": 16,
        "lr": 0.001,
        "augment": "basic",
    },
    "simple_cnn (from scratch)": {"model": "simple_cnn", "epochs": 6, "augment": "basic"},
}


def top1(model_path: Path) -> float:
    predictor = cnnkit.load(model_path, device="cpu", precision="fp32")
    return float(predictor.evaluate("cifar10-sample", progress=False).top1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="bench/results/int8_accuracy.json")
    args = parser.parse_args()
    machine = print_machine()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, options in SETUPS.items():
            run = cnnkit.train(
                data="cifar10-sample",
                project=tmp,
                name=options["model"],
                progress=False,
                report=False,
                seed=0,
                **options,
            )
            fp32 = export_model(run.run_dir, "onnx", dynamic_batch=True)
            int8 = export_model(run.run_dir, "onnx", dynamic_batch=True, int8=True)
            row = {
                "model": name,
                "checkpoint_top1": top1(run.run_dir / "best.pt"),
                "onnx_fp32_top1": top1(fp32.path),
                "onnx_int8_top1": top1(int8.path),
                "int8_parity": int8.parity,
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    result = {"machine": machine, "command": " ".join(sys.argv), "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
