"""cnnkit: convolutional neural networks for image recognition.

import cnnkit
run = cnnkit.train(data="cifar10-sample", model="simple_cnn", epochs=5)
clf = cnnkit.load(run.best)
clf.predict("cat.png")
clf.evaluate("cifar10-sample")
"""

import os
from typing import Any

from cnnkit.config import TrainConfig
from cnnkit.data import load_data
from cnnkit.data.datasets import evaluation_data
from cnnkit.engine import RunResult, train
from cnnkit.errors import CnnkitError
from cnnkit.models import create_model, list_models, summarize
from cnnkit.predict import load
from cnnkit.tasks.classify.predictor import Classifier, Prediction

__version__ = "0.1.0"


def evaluate(
    checkpoint: str | os.PathLike,
    data: str | os.PathLike | None = None,
    split: str = "test",
    device: str = "auto",
    precision: str = "auto",
    **kwargs: Any,
) -> Any:
    """Evaluate a checkpoint (or run folder) on data (default: the data the run trained on, from
    any working directory, as `cnnkit evaluate` finds it); returns the task's report: a
    ClassificationReport, a DetectionReport for a detector, a SegmentationReport for a
    segmenter."""
    predictor = load(checkpoint, device=device, precision=precision)
    chosen = evaluation_data(data, predictor.data_location, predictor.config)
    return predictor.evaluate(chosen, split=split, **kwargs)


__all__ = [
    "Classifier",
    "CnnkitError",
    "Prediction",
    "RunResult",
    "TrainConfig",
    "create_model",
    "evaluate",
    "list_models",
    "load",
    "load_data",
    "summarize",
    "train",
]
