"""`cnnkit export`: a checkpoint as ONNX, torch.export's .pt2 or TorchScript, checked.

``export_model`` builds the task's graph (``graphs``), writes it with its metadata
(``metadata``) to a file beside the checkpoint, loads that file back as a predictor
(``runtime``) and compares its answers with the checkpoint's on real images (``parity``). The
file is kept only when they agree; export_report.json says what was measured either way.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import logging
import os
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cnnkit.engine.checkpoint import resolve_checkpoint_path
from cnnkit.errors import CnnkitError
from cnnkit.export.graphs import Graph, task_graph
from cnnkit.export.metadata import (
    EXTRA_FILE,
    FORMATS,
    SUFFIX,
    build_metadata,
    format_of,
    to_json,
    write_onnx_metadata,
)
from cnnkit.export.parity import (
    FLOAT_LIMITS,
    INT8_LIMITS,
    PARITY_IMAGES,
    check_parity,
    graph_input,
    parity_images,
    summary,
)
from cnnkit.export.quantize import (
    CALIBRATION_IMAGES,
    INT8_PARITY_IMAGES,
    check_int8,
    quantize_onnx,
    split_images,
)
from cnnkit.export.runtime import load_exported
from cnnkit.inputs import output_folder

__all__ = ["ExportResult", "export_model", "load_exported", "verify"]

REPORT = "export_report.json"
MULTILABEL_REFUSED = (
    "cnnkit {command} takes single-label classifiers; this model is multi-label (a sigmoid "
    "and a threshold per label): use `cnnkit predict` or cnnkit.load(run).predict in Python"
)
MAX_BATCH = 4096


@dataclass
class ExportResult:
    """An exported file and its parity check."""

    path: Path
    format: str
    parity: dict[str, Any]
    seconds: float
    report: Path
    metadata: dict[str, Any] = field(repr=False, default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.path.name,
            "format": self.format,
            "task": self.metadata.get("task"),
            "batch": self.metadata.get("input", {}).get("batch"),
            "input_dtype": self.metadata.get("input", {}).get("dtype"),
            "checkpoint_sha256": self.metadata.get("checkpoint_sha256"),
            "int8": self.metadata.get("int8"),
            "seconds": round(self.seconds, 2),
            "parity": self.parity,
        }


def output_path(
    checkpoint: Path, fmt: str, out: str | os.PathLike | None, int8: bool = False
) -> Path:
    """Where an export of ``checkpoint`` goes: ``out`` (checked to end in the format's suffix),
    else beside the checkpoint (best.onnx; int8: best.int8.onnx)."""
    if out is None:
        path = checkpoint.with_suffix((".int8" if int8 else "") + SUFFIX[fmt])
    else:
        path = Path(out)
        if format_of(path) != fmt:
            raise CnnkitError(f"--out for {fmt} must end in {SUFFIX[fmt]}, not '{path.name}'")
    if path.is_dir():  # said before the export runs, not after it
        raise CnnkitError(f"{path} is a folder; --out names the file to write")
    output_folder(path.parent, "the exported model")
    return path


def check_opset(opset: int) -> None:
    """An opset the installed onnx knows, from 7 (the oldest onnxruntime runs); torch.onnx
    otherwise prints a traceback and silently writes its own default instead."""
    import onnx

    newest = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, int) or not 7 <= opset <= newest:
        raise CnnkitError(f"--opset must be a whole number from 7 to {newest}, not {opset!r}")


def _check_written_opset(path: Path, opset: int) -> None:
    """torch.onnx writes the graph at its own opset and converts it down; where the conversion
    fails it warns and keeps its own (opsets 7-13 for cnnkit's models, measured): refused."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    written = next((i.version for i in model.opset_import if i.domain in ("", "ai.onnx")), None)
    if written != opset:
        raise CnnkitError(
            f"torch.onnx could not convert this model to opset {opset} (it wrote opset"
            f" {written}): give a newer --opset, or leave it out"
        )


@contextlib.contextmanager
def _quiet():
    """The exporters print progress, warn about tracing and log their own tracebacks (an
    opset they cannot convert to); a user sees cnnkit's one line."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        previous = logging.root.manager.disable
        logging.disable(logging.CRITICAL)
        try:
            yield
        finally:
            logging.disable(previous)


def _batch_shapes(dynamic: bool) -> tuple | None:
    """torch.export's dynamic_shapes for the one input: its batch axis, or None (fixed)."""
    return ({0: torch.export.Dim("batch", min=1, max=MAX_BATCH)},) if dynamic else None


def _onnx_exporter_options(dynamic: bool, outputs: list[str]) -> dict[str, Any]:
    """torch.onnx's dynamo exporter (torch >= 2.6: dynamic_shapes, one self-contained file);
    torch 2.5's TorchScript-based exporter with a named dynamic axis before that."""
    parameters = inspect.signature(torch.onnx.export).parameters
    if "dynamic_shapes" in parameters and "external_data" in parameters:
        shapes = _batch_shapes(dynamic)
        # external_data=False: one file (cnnkit's models are far under ONNX's 2 GB limit)
        return {"dynamo": True, "dynamic_shapes": shapes, "external_data": False, "verbose": False}
    axes = {name: {0: "batch"} for name in ["images", *outputs]} if dynamic else None
    return {"dynamic_axes": axes}


def _write(graph: Graph, fmt: str, path: Path, dynamic: bool, meta: dict, opset: int | None):
    example = graph.example if dynamic else graph.example[:1]
    shapes = _batch_shapes(dynamic)
    with _quiet(), torch.no_grad():
        if fmt == "onnx":
            torch.onnx.export(
                graph.module,
                (example,),
                str(path),
                input_names=["images"],
                output_names=graph.outputs,
                opset_version=opset,
                **_onnx_exporter_options(dynamic, graph.outputs),
            )
            if opset is not None:
                _check_written_opset(path, opset)
            write_onnx_metadata(path, meta)
        elif fmt == "pt2":
            program = torch.export.export(graph.module, (example,), dynamic_shapes=shapes)
            torch.export.save(program, str(path), extra_files={EXTRA_FILE: to_json(meta)})
        else:
            traced = torch.jit.trace(graph.module, (example,), check_trace=False)
            torch.jit.save(traced, str(path), _extra_files={EXTRA_FILE: to_json(meta)})


def _record(report: Path, entry: dict[str, Any]) -> None:
    """export_report.json holds one entry per exported file name in its folder."""
    entries: dict[str, Any] = {}
    if report.is_file():
        with contextlib.suppress(ValueError, OSError):
            loaded = json.loads(report.read_text())
            entries = loaded if isinstance(loaded, dict) else {}
    entries[entry["file"]] = entry
    report.write_text(json.dumps(entries, indent=2) + "\n")


def export_model(
    source: str | os.PathLike,
    format: str = "onnx",
    out: str | os.PathLike | None = None,
    *,
    dynamic_batch: bool = False,
    bake_preprocessing: bool = False,
    images: list[str] | None = None,
    opset: int | None = None,
    int8: bool = False,
) -> ExportResult:
    """Export a checkpoint (or run folder's best.pt) and check it against the checkpoint.

    ``format``: onnx (torch.onnx's dynamo exporter), pt2 (torch.export) or torchscript (traced).
    The batch axis is 1 unless ``dynamic_batch``. ``bake_preprocessing``: a classifier's graph
    takes uint8 pixels and normalises inside (detectors and segmenters always do). The parity
    check runs on ``images`` (files, folders, globs), else on the run's own data; a failed
    check removes the file and raises CnnkitError; export_report.json records it either way.
    ``int8`` (ONNX; classifiers, segmenters, embedding models): onnxruntime's static int8
    quantisation, calibrated on half of those images and checked on the other half.
    """
    if format not in FORMATS:
        raise CnnkitError(f"export format must be one of {', '.join(FORMATS)}, not '{format}'")
    if opset is not None:
        check_opset(opset)
    from cnnkit.predict import load

    checkpoint = resolve_checkpoint_path(source)
    if format_of(checkpoint) is not None:
        raise CnnkitError(f"{checkpoint} is already exported: export from its checkpoint")
    path = output_path(checkpoint, format, out, int8)
    reference = load(checkpoint, device="cpu", precision="fp32")
    if getattr(reference, "multilabel", False):
        raise CnnkitError(MULTILABEL_REFUSED.format(command="export"))
    if int8:
        check_int8(reference.task, format)
    calibration, arrays = _check_images(reference, images, int8)  # before the slow export
    started = time.perf_counter()
    graph = task_graph(reference, bake_preprocessing)
    meta = build_metadata(
        reference,
        checkpoint,
        format,
        graph.outputs,
        graph.pixels,
        None if dynamic_batch else 1,
        graph.extra,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    # written under its own name in a hidden folder (a .pt2 or .torchscript archive is
    # rooted at its file's stem), renamed into place only once it passes
    scratch = path.with_name(f".{path.name}.partial")
    scratch.mkdir(exist_ok=True)
    partial, floating = scratch / path.name, scratch / f"fp32-{path.name}"
    try:
        try:
            _write(graph, format, floating if int8 else partial, dynamic_batch, meta, opset)
        except CnnkitError:
            raise
        except Exception as exc:  # the exporter's own failure, in one line
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise CnnkitError(f"{format} export of {checkpoint} failed: {reason}") from None
        if int8:
            inputs = graph_input(reference, calibration, graph.pixels)
            meta["int8"] = quantize_onnx(floating, partial, inputs)
            write_onnx_metadata(partial, meta)
        exported = load_exported(partial, device="cpu")
        limits = INT8_LIMITS if int8 else FLOAT_LIMITS
        parity = check_parity(reference, exported, graph.module, arrays, graph.pixels, limits)
        result = ExportResult(
            path, format, parity, time.perf_counter() - started, path.parent / REPORT, meta
        )
        _record(result.report, result.to_dict())
        if not parity["passed"]:
            raise CnnkitError(
                f"parity check failed ({summary(parity)}): {path.name} not written;"
                f" see {result.report}"
            )
        os.replace(partial, path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return result


def _check_images(reference: Any, images: list[str] | None, int8: bool) -> tuple[list, list]:
    """(calibration images, parity images): for int8 the two halves of one spread, so export
    and --check judge a file on the same images and never on those it was calibrated on."""
    if not int8:
        return [], parity_images(reference, images, PARITY_IMAGES)[0]
    count = CALIBRATION_IMAGES + INT8_PARITY_IMAGES
    return split_images(parity_images(reference, images, count)[0])


def verify(
    checkpoint: str | os.PathLike, exported: str | os.PathLike, images: list[str] | None = None
) -> dict[str, Any]:
    """The parity check of an existing exported file against a checkpoint (or run folder), on
    ``images`` or the run's own data: what ``export_model`` measures before it keeps a file."""
    from cnnkit.predict import load

    reference = load(resolve_checkpoint_path(checkpoint), device="cpu", precision="fp32")
    model = load_exported(exported, device="cpu")
    if model.task != reference.task or list(model.classes) != list(reference.classes):
        raise CnnkitError(f"{exported} is not an export of {checkpoint}: other task or classes")
    pixels = bool(getattr(model.model, "takes_pixels", True))
    int8 = bool(getattr(model.model, "meta", {}).get("int8"))
    arrays = _check_images(reference, images, int8)[1]  # int8: those export checked on
    graph = task_graph(reference, bake=pixels)
    limits = INT8_LIMITS if int8 else FLOAT_LIMITS
    return check_parity(reference, model, graph.module, arrays, graph.pixels, limits)
