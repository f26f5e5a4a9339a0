"""`cnnkit demo`: the whole pipeline on the bundled CIFAR-10 sample, offline, on a CPU.

1. the classic CNN trained from scratch; 2. ImageNet-pretrained EfficientNet-Lite0 with a new
head (frozen backbone, features cached); both evaluated on the sample's test split and shown
side by side, then a few predictions.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from cnnkit.config import TrainConfig
from cnnkit.engine import train
from cnnkit.tasks.classify.predictor import Classifier

SAMPLE = "cifar10-sample"
SCRATCH_EPOCHS = 15
TRANSFER_EPOCHS = 10
TRANSFER_INPUT_SIZE = 160  # CIFAR's 32 px upscaled; 224 (the weights' own) is slower, ~same here


def sample_images(per_class: int = 1) -> list[Path]:
    """A few test images of the bundled sample, one per class by default."""
    root = Path(str(files("cnnkit") / "data" / "samples" / SAMPLE / "test"))
    picked: list[Path] = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        picked += sorted(class_dir.glob("*.png"))[:per_class]
    return picked


def run_demo(project: str = "runs", epochs: int | None = None) -> dict[str, float]:
    """Train both models on the sample, compare their test accuracy, predict a few images."""
    runs = {}
    print("== 1. simple_cnn, the classic CIFAR-10 network, trained from scratch")
    runs["simple_cnn"] = train(
        TrainConfig(
            data=SAMPLE,
            model="simple_cnn",
            epochs=epochs or SCRATCH_EPOCHS,
            batch_size=32,
            lr=1e-3,
            project=project,
        )
    )
    print("\n== 2. EfficientNet-Lite0 pretrained on ImageNet, frozen, with a new head")
    runs["efficientnet_lite0"] = train(
        TrainConfig(
            data=SAMPLE,
            model="efficientnet_lite0",
            pretrained="imagenet",
            input_size=TRANSFER_INPUT_SIZE,
            epochs=epochs or TRANSFER_EPOCHS,
            batch_size=64,
            lr=1e-3,
            project=project,
        )
    )

    print("\n== 3. test accuracy on the sample's 500 test images")
    accuracies = {name: run.metrics["test_accuracy"] for name, run in runs.items()}
    for name, run in runs.items():
        print(
            f"  {name:<20} {accuracies[name]:6.1%}   {run.metrics['wall_seconds']:5.1f}s   "
            f"{run.run_dir}"
        )

    print("\n== 4. predictions (truth -> simple_cnn | efficientnet_lite0)")
    images = [str(p) for p in sample_images()]
    predicted = {
        name: Classifier.load(run.best).predict_paths(images, top_k=1)[0]
        for name, run in runs.items()
    }
    for i, path in enumerate(images):
        truth = Path(path).parent.name
        cells = [f"{p[i].label:<10} {p[i].probability:4.0%}" for p in predicted.values()]
        print(f"  {truth:>10} -> " + " | ".join(cells))
    print(f"\nrun folders: {', '.join(str(run.run_dir) for run in runs.values())}")
    return accuracies
