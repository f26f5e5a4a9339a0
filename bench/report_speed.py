"""How long report.html takes for a CIFAR-10 run, and what Grad-CAM costs against a plain
forward plus backward pass.

    python bench/report_speed.py --epochs 1 --repeats 5

1. Trains simple_cnn on the real CIFAR-10 (../shared/data/cifar10: 50,000 train, 10,000 test)
   with `report=False`, then times `build_report(run)` (the whole page: the 10,000-image test
   evaluation, 16 top-loss CAMs, the augmented batch, filters, feature maps, every plot) three
   times with the decoded-image cache warm, as it is at the end of a run.
2. Grad-CAM (pytorch-grad-cam, what `cnnkit explain` and the top-loss gallery use) against the
   same model's forward + backward pass on the same batch of test images, for simple_cnn and
   resnet18 at 32 px: the median of --repeats calls each, one thread per core as training uses.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402

import cnnkit  # noqa: E402
from cnnkit.report import build_report  # noqa: E402
from common import SHARED_CIFAR10, print_machine  # noqa: E402


def time_report(project: Path, epochs: int) -> tuple[Path, list[float], int]:
    run = cnnkit.train(
        data=str(SHARED_CIFAR10),
        model="simple_cnn",
        epochs=epochs,
        augment="basic",
        project=str(project),
        name="cifar10",
        progress=False,
        report=False,
    )
    seconds = []
    for _ in range(3):
        started = time.perf_counter()
        page = build_report(run.run_dir)
        seconds.append(time.perf_counter() - started)
    return run.run_dir, seconds, page.stat().st_size


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def cam_cost(model_name: str, batch: torch.Tensor, repeats: int) -> dict[str, float]:
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from cnnkit.explain.layers import find_target_layer

    model = cnnkit.create_model(model_name, num_classes=10).float().eval()
    _, layer = find_target_layer(model, tuple(batch.shape[1:]), "auto")
    targets = [ClassifierOutputTarget(i % 10) for i in range(len(batch))]
    picked = torch.arange(len(batch)) % 10

    def forward_backward() -> None:
        model.zero_grad(set_to_none=True)
        x = batch.clone().requires_grad_(False)
        logits = model(x)
        logits.gather(1, picked[:, None]).sum().backward()

    with GradCAM(model=model, target_layers=[layer]) as cam:
        cam_seconds = median_seconds(lambda: cam(input_tensor=batch, targets=targets), repeats)
    plain = median_seconds(forward_backward, repeats)
    return {"gradcam_s": cam_seconds, "forward_backward_s": plain, "ratio": cam_seconds / plain}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cam-batch", type=int, default=16)
    parser.add_argument("--out", default="bench/results/report_speed.json")
    args = parser.parse_args()
    info = print_machine()
    results: dict = {"machine": info}
    with tempfile.TemporaryDirectory() as tmp:
        run_dir, seconds, size = time_report(Path(tmp), args.epochs)
        results["report"] = {"seconds": seconds, "bytes": size, "test_images": 10_000}
        print(
            f"report.html of a CIFAR-10 run (10,000 test images, 16 CAMs): "
            f"{min(seconds):.1f} s best, {statistics.median(seconds):.1f} s median, "
            f"{size / 1e6:.2f} MB"
        )
    from cnnkit.data import load_data

    test = load_data(str(SHARED_CIFAR10), splits=("test",), progress=False).test
    images = test.images[: args.cam_batch].float() / 255
    mean = torch.tensor([0.4914, 0.4822, 0.4465])[:, None, None]
    std = torch.tensor([0.2470, 0.2435, 0.2616])[:, None, None]
    batch = ((images - mean) / std).contiguous()
    results["gradcam"] = {}
    for name in ("simple_cnn", "resnet18"):
        cost = cam_cost(name, batch, args.repeats)
        results["gradcam"][name] = cost
        print(
            f"{name}: Grad-CAM of {len(batch)} images {cost['gradcam_s'] * 1000:.1f} ms, "
            f"forward+backward {cost['forward_backward_s'] * 1000:.1f} ms: "
            f"{cost['ratio']:.2f}x"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
