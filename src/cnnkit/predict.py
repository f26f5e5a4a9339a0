"""`cnnkit.load(run)`: the one loader every consumer uses; it returns the task's predictor."""

from __future__ import annotations

import os
from typing import Any

from cnnkit.engine.checkpoint import load_checkpoint, resolve_checkpoint_path
from cnnkit.inputs import expand_paths
from cnnkit.tasks.base import load_predictor

__all__ = ["expand_paths", "load"]


def load(path: str | os.PathLike, device: str = "auto", precision: str = "auto") -> Any:
    """A checkpoint file or run folder (its best.pt) as its task's predictor: a Classifier
    (`.predict("cat.png")` -> top-k classes), a Detector (-> boxes) or a Segmenter (-> a class
    mask at the image's size).
    An exported file (.onnx, .pt2, .torchscript) loads as the same predictor over its graph.
    `cnnkit.load("runs/x/best.pt").predict("cat.png")`."""
    from cnnkit.export.metadata import format_of

    if format_of(path) is not None:  # model.onnx / .pt2 / .torchscript from `cnnkit export`
        from cnnkit.export.runtime import load_exported

        return load_exported(path, device=device)
    resolved = resolve_checkpoint_path(path)
    return load_predictor(load_checkpoint(resolved), resolved, device, precision)
