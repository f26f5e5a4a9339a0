"""Exported files back into cnnkit's predictors: ``cnnkit.load("model.onnx")``.

``open_graph`` reads a file and its metadata and gives a module that runs the graph:
onnxruntime for .onnx (CPU), torch.export's program for .pt2, TorchScript for .torchscript.
``load_exported`` wraps it in the task's own predictor (Classifier, Detector, Segmenter), so
an exported model decodes, resizes, post-processes, evaluates and draws exactly as its
checkpoint does: only the network underneath differs.
"""

from __future__ import annotations

import logging
import os
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cnnkit.data.preprocess import Preprocessing
from cnnkit.errors import CnnkitError
from cnnkit.export.metadata import EXTRA_FILE, KEY, format_of, parse


class GraphRunner(nn.Module):
    """Runs an exported graph on torch tensors: (B, 3, H, W) in, its output(s) out, on the
    input's device. A graph of fixed batch is run in slices of that batch."""

    def __init__(self, call: Any, meta: dict[str, Any], onnx: bool, threads: int | None) -> None:
        super().__init__()
        # kept out of the module tree: the loaded graph is fixed in eval mode on its device
        # (torch.export's module refuses train()/eval())
        self._graph = (call,)
        self.meta = meta
        self.onnx = onnx
        self.threads = threads
        batch = meta["input"]["batch"]
        self.fixed_batch = None if batch == "dynamic" else int(batch)
        self.takes_pixels = meta["input"]["dtype"] == "uint8"
        # a parameter-free graph still answers next(model.parameters()).device
        self.anchor = nn.Parameter(torch.zeros(0), requires_grad=False)

    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = x.to(torch.uint8 if self.takes_pixels else torch.float32)
        if self.onnx:
            outputs = self._graph[0].run(None, {"images": x.detach().cpu().contiguous().numpy()})
            return tuple(torch.from_numpy(np.asarray(o)) for o in outputs)
        out = self._graph[0](x.contiguous())
        return tuple(out) if isinstance(out, (tuple, list)) else (out,)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        device = x.device
        if self.fixed_batch is None or len(x) == self.fixed_batch:
            parts = [self._run(x)]
        else:
            if len(x) % self.fixed_batch:
                raise CnnkitError(
                    f"this graph takes batches of {self.fixed_batch}; re-export with"
                    " --dynamic-batch for other sizes"
                )
            parts = [
                self._run(x[i : i + self.fixed_batch]) for i in range(0, len(x), self.fixed_batch)
            ]
        joined = tuple(torch.cat(p).to(device) for p in zip(*parts, strict=True))
        return joined[0] if len(joined) == 1 else joined


def _onnx_session(path: Path, threads: int | None) -> tuple[Any, str]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session, session.get_modelmeta().custom_metadata_map.get(KEY, "")


@contextmanager
def _quiet(logger_name: str):
    """``logger_name``'s records dropped for the block (its level and handlers untouched)."""
    logger = logging.getLogger(logger_name)
    was = logger.disabled
    logger.disabled = True
    try:
        yield
    finally:
        logger.disabled = was


def open_graph(
    path: str | os.PathLike, device: str | torch.device = "cpu", threads: int | None = None
) -> tuple[GraphRunner, dict[str, Any]]:
    """The runner of an exported file and its metadata; a bad file is a one-line error.
    ``threads``: onnxruntime's intra-op threads (default: torch's)."""
    path = Path(path)
    fmt = format_of(path)
    if fmt is None:
        raise CnnkitError(f"{path}: not an exported model (.onnx, .pt2 or .torchscript)")
    if not path.is_file():
        raise CnnkitError(f"exported model not found: {path}")
    files = {EXTRA_FILE: ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit.load's deprecation notice, among others
            if fmt == "onnx":
                call, text = _onnx_session(path, threads)
            elif fmt == "pt2":
                with _quiet("torch.export"):  # it logs a damaged file's traceback, then raises
                    program = torch.export.load(str(path), extra_files=files)
                call, text = program.module().to(device), files[EXTRA_FILE]
            else:
                call = torch.jit.load(str(path), map_location=device, _extra_files=files).eval()
                text = files[EXTRA_FILE]
    except Exception as exc:  # a user's file: whatever the reader chokes on, in one line
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise CnnkitError(f"{path} is not a readable {fmt} file ({reason})") from None
    meta = parse(text, path)
    return GraphRunner(call, meta, fmt == "onnx", threads), meta


class DenseDetections(nn.Module):
    """An exported detector's graph with torchvision's selection after it: the module a
    Detector calls (uint8 letterboxed batch in, per image boxes/scores/labels out)."""

    def __init__(self, graph: GraphRunner, layout: dict[str, Any], postprocess: Any) -> None:
        super().__init__()
        self.graph = graph
        self.layout = layout
        self.postprocess = postprocess  # what select() picks with; apply_postprocess sets it

    def forward(self, images: torch.Tensor | list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        from cnnkit.export.dense_detect import select

        batch = images if isinstance(images, torch.Tensor) else torch.stack(list(images))
        boxes, scores = self.graph(batch)
        found = [
            select(b.float(), s.float(), self.layout, self.postprocess)
            for b, s in zip(boxes, scores, strict=True)
        ]
        return [{k: v.to(batch.device) for k, v in f.items()} for f in found]


@torch.no_grad()
def _check_outputs(graph: GraphRunner, meta: dict[str, Any], path: Path) -> None:
    """One pass on a blank input: the graph must answer what its metadata's task reads, so a
    file whose metadata was edited (or copied from another graph) is one line, not a crash
    in the middle of a prediction."""
    try:
        size = int(meta["input"]["height"]), int(meta["input"]["width"])
        batch = graph.fixed_batch or 1
        found = graph(torch.zeros((batch, 3, *size)))
    except Exception as exc:  # a user's file: whatever the runtime chokes on, in one line
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise CnnkitError(
            f"{path}: its graph does not run on the input its metadata describes ({reason})"
        ) from None
    outputs = found if isinstance(found, tuple) else (found,)
    shapes = [tuple(o.shape) for o in outputs]
    task, n = meta.get("task"), len(meta.get("classes") or [])
    fits = {
        "classify": len(shapes) == 1 and shapes[0] == (batch, n),
        "segment": len(shapes) == 1 and len(shapes[0]) == 4 and shapes[0][:2] == (batch, n),
        "embed": len(shapes) == 1 and len(shapes[0]) == 2 and shapes[0][0] == batch,
        "detect": len(shapes) == 2 and shapes[0][-1] == 4,
    }.get(str(task), True)  # an unknown task is refused by name below
    if not fits:
        raise CnnkitError(
            f"{path}: its metadata describes a {task} model of {n} classes, but its graph"
            f" answers {', '.join(str(list(s)) for s in shapes)}: not a file cnnkit wrote"
        )


def predictor_from_graph(
    graph: GraphRunner, meta: dict[str, Any], path: Path, device: str = "cpu"
) -> Any:
    """The task's predictor around an exported graph (fp32: the graph's own precision)."""
    _check_outputs(graph, meta, path)
    prep = Preprocessing.from_dict(meta["preprocessing"])
    classes, config, where = meta["classes"], meta.get("config") or {}, meta.get("data_location")
    task = meta.get("task")
    if task == "classify":
        from cnnkit.tasks.classify.predictor import Classifier

        threshold = meta.get("decision_threshold")
        return Classifier(
            graph, classes, prep, device, "fp32", None, config, path, where, threshold
        )
    if task == "segment":
        from cnnkit.tasks.segment.predictor import Segmenter

        instances = str(meta.get("instances") or "auto")
        return Segmenter(graph, classes, prep, device, "fp32", config, path, where, instances)
    if task == "detect":
        from cnnkit.tasks.detect.postprocess import PostProcess
        from cnnkit.tasks.detect.predictor import Detector

        postprocess = PostProcess.from_dict(meta.get("postprocess") or {})
        model = DenseDetections(graph, meta["dense"], postprocess)
        return Detector(model, classes, prep, postprocess, device, "fp32", config, path, where)
    if task == "embed":
        from cnnkit.tasks.embed.predictor import Embedder

        return Embedder.from_exported(graph, meta, path, device)
    raise CnnkitError(f"{path} holds a '{task}' model, which this cnnkit cannot run")


def load_exported(path: str | os.PathLike, device: str = "auto", threads: int | None = None) -> Any:
    """An exported file as its task's predictor. onnxruntime runs on the CPU; .pt2 and
    .torchscript on ``device``."""
    path = Path(path)
    if format_of(path) == "onnx" and device not in ("auto", "cpu"):
        raise CnnkitError("cnnkit runs .onnx files with onnxruntime on the CPU: use --device cpu")
    from cnnkit.engine.device import resolve_device

    target = "cpu" if format_of(path) == "onnx" else str(resolve_device(device))
    graph, meta = open_graph(path, target, threads)
    return predictor_from_graph(graph, meta, path, target)
