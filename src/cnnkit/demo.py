"""`cnnkit demo`: the whole pipeline on the bundled CIFAR-10 sample, offline, in under a minute."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from cnnkit.config import TrainConfig
from cnnkit.evaluate import print_report
from cnnkit.predict import Classifier
from cnnkit.train import train

SAMPLE = "cifar10-sample"
DEMO_EPOCHS = 15


def sample_images(per_class: int = 1) -> list[Path]:
    """A few test images of the bundled sample, one per class by default."""
    root = Path(str(files("cnnkit") / "data" / "samples" / SAMPLE / "test"))
    picked: list[Path] = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        picked += sorted(class_dir.glob("*.png"))[:per_class]
    return picked


def run_demo(project: str = "runs", epochs: int | None = None) -> dict[str, float]:
    """Train simple_cnn on the sample, evaluate it on the sample's test split, predict a few."""
    print("== 1. train simple_cnn (the classic CIFAR-10 network) on the bundled sample")
    cfg = TrainConfig(
        data=SAMPLE,
        model="simple_cnn",
        epochs=epochs or DEMO_EPOCHS,
        batch_size=32,
        lr=1e-3,
        project=project,
    )
    run = train(cfg)
    print("\n== 2. evaluate best.pt on the sample's test split")
    clf = Classifier.load(run.best)
    report = clf.evaluate(SAMPLE, split="test", progress=False)
    print_report(report)
    print("\n== 3. predict a few test images")
    predictions, _ = clf.predict_paths([str(p) for p in sample_images()], top_k=1)
    for p in predictions:
        truth = Path(p.source).parent.name
        mark = "ok " if p.label == truth else "   "
        print(f"  {mark}{truth:>10} -> {p.label:<10} {p.probability:.0%}")
    print(f"\nrun folder: {run.run_dir}  (history.csv, curves.png, best.pt, {report.out_dir})")
    return {"simple_cnn": report.top1}
