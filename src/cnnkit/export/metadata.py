"""The metadata an exported file carries, so that a runtime needs nothing else.

One JSON document, stored where each format keeps extra data: ONNX ``metadata_props`` (key
``cnnkit``), a .pt2 archive's and a TorchScript file's extra files (``cnnkit.json``). It holds
the task, the class names, the preprocessing (size, resize policy, mean/std), what the graph
takes and gives, the post-processing settings, the cnnkit and torch versions and the
checkpoint's sha256.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from cnnkit.errors import CnnkitError

KEY = "cnnkit"
EXTRA_FILE = "cnnkit.json"
METADATA_VERSION = 1
FORMATS = ("onnx", "pt2", "torchscript")
SUFFIX = {"onnx": ".onnx", "pt2": ".pt2", "torchscript": ".torchscript"}


def format_of(path: str | os.PathLike) -> str | None:
    """The export format a file name says (.onnx, .pt2, .torchscript or .ts), or None."""
    suffix = Path(path).suffix.lower()
    return {
        ".onnx": "onnx",
        ".pt2": "pt2",
        ".torchscript": "torchscript",
        ".ts": "torchscript",
    }.get(suffix)


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_metadata(
    predictor: Any,
    checkpoint: Path,
    fmt: str,
    graph_outputs: list[str],
    pixels: bool,
    batch: int | None,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """The document for ``predictor`` (loaded from ``checkpoint``) exported as ``fmt``;
    ``batch`` None means a dynamic batch axis."""
    from cnnkit import __version__

    height, width = predictor.preprocessing.size
    meta: dict[str, Any] = {
        "cnnkit_export": METADATA_VERSION,
        "task": predictor.task,
        "format": fmt,
        "classes": list(predictor.classes),
        "preprocessing": predictor.preprocessing.to_dict(),
        "input": {
            "name": "images",
            "layout": "NCHW",
            "dtype": "uint8" if pixels else "float32",
            "values": "pixels 0-255" if pixels else "normalised: (pixel / 255 - mean) / std",
            "height": height,
            "width": width,
            "batch": "dynamic" if batch is None else batch,
        },
        "outputs": graph_outputs,
        "cnnkit_version": __version__,
        "torch_version": torch.__version__.split("+")[0],
        "checkpoint": checkpoint.name,
        "checkpoint_sha256": sha256_of(checkpoint),
        "config": predictor.config,
        "data_location": predictor.data_location,
        **extra,
    }
    if predictor.task == "classify" and predictor.decision_threshold is not None:
        meta["decision_threshold"] = predictor.decision_threshold
    if predictor.task == "detect":
        meta["postprocess"] = predictor.postprocess.to_dict()
    if predictor.task == "segment":
        meta["instances"] = predictor.instances
    if predictor.task == "embed":
        meta.update(predictor.export_fields())
    return meta


def to_json(meta: dict[str, Any]) -> str:
    return json.dumps(meta, default=str)


def parse(text: str | bytes, path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(text)
    except ValueError:
        meta = None
    if not isinstance(meta, dict) or "cnnkit_export" not in meta:
        raise CnnkitError(f"{path} has no readable cnnkit metadata (not exported by cnnkit?)")
    if int(meta["cnnkit_export"]) > METADATA_VERSION:
        raise CnnkitError(
            f"{path} was exported by a newer cnnkit (metadata {meta['cnnkit_export']})"
        )
    return meta


def write_onnx_metadata(path: Path, meta: dict[str, Any]) -> None:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    entry = next((p for p in model.metadata_props if p.key == KEY), None)
    if entry is None:
        entry = model.metadata_props.add()
        entry.key = KEY
    entry.value = to_json(meta)
    onnx.save(model, str(path))


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The cnnkit metadata of an exported file, or a one-line error."""
    from cnnkit.export.runtime import open_graph

    return open_graph(path)[1]
