"""cnnkit: convolutional neural networks for image recognition.

import cnnkit
run = cnnkit.train(data="cifar10-sample", model="simple_cnn", epochs=5)
clf = cnnkit.load(run.best)
clf.predict("cat.png")
clf.evaluate("cifar10-sample")
"""

from cnnkit.config import TrainConfig
from cnnkit.data import load_data
from cnnkit.engine import RunResult, train
from cnnkit.errors import CnnkitError
from cnnkit.models import create_model, list_models, summarize
from cnnkit.predict import load
from cnnkit.tasks.classify.predictor import Classifier, Prediction

__version__ = "0.1.0"


def evaluate(checkpoint: str, data: str | None = None, split: str = "test", **kwargs):
    """Evaluate a checkpoint (or run folder) on data; returns a ClassificationReport."""
    clf = load(checkpoint)
    return clf.evaluate(data or clf.config.get("data"), split=split, **kwargs)


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
