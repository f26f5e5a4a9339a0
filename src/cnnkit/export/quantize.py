"""int8 ONNX files: onnxruntime's static quantisation, calibrated on real images.

onnxruntime's own tooling does the work (``quant_pre_process`` for shape inference and graph
clean-up, then ``quantize_static``): int8 weights per output channel, uint8 activations whose
ranges come from running the fp32 graph on calibration images, written in the QDQ format that
onnxruntime's CPU provider fuses into integer kernels (VNNI where the CPU has it). cnnkit
adds only what a user would otherwise write by hand: the calibration images from the run's
own data, kept apart from the images that check parity, and the cnnkit metadata carried over.

An int8 graph cannot match the checkpoint to float precision, so its parity check compares
the task's answers (``parity.INT8_LIMITS``) on images it was not calibrated on.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnkit.errors import CnnkitError

INT8_TASKS = ("classify", "segment", "embed")
CALIBRATION_IMAGES = 64  # and as many others for the parity check, where the data has them
INT8_PARITY_IMAGES = 64
METHOD = "onnxruntime static quantisation (QDQ): int8 weights per channel, uint8 activations"


def check_int8(task: str | None, fmt: str) -> None:
    """One line when int8 cannot be had for this format or task (None: not known yet)."""
    if fmt != "onnx":
        raise CnnkitError(f"--int8 writes ONNX for onnxruntime: use --format onnx, not {fmt}")
    if task is not None and task not in INT8_TASKS:
        raise CnnkitError(
            f"--int8 takes classifiers, segmenters and embedding models, not {task} models"
            " (a detector's box decoding and NMS need float precision)"
        )


def split_images(arrays: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Calibration images and parity images, alternating so both spread over the data. Fewer
    than two is refused: a check on the image the scales were calibrated on proves nothing."""
    if len(arrays) < 2:
        raise CnnkitError(
            f"--int8 needs at least 2 readable images ({len(arrays)} found): half calibrate"
            " the quantisation, the other half check it; give more with --images"
        )
    return arrays[0::2], arrays[1::2]


class _Batches:
    """onnxruntime's CalibrationDataReader protocol over prepared graph inputs, one image a
    call (the graph may have a fixed batch of 1)."""

    def __init__(self, batch: torch.Tensor) -> None:
        self.items = [batch[i : i + 1].contiguous().numpy() for i in range(len(batch))]
        self.index = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.index >= len(self.items):
            return None
        self.index += 1
        return {"images": self.items[self.index - 1]}

    def rewind(self) -> None:
        self.index = 0


@contextlib.contextmanager
def _quiet():
    """onnxruntime's quantiser logs and prints advice per node; a user sees cnnkit's line."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def quantize_onnx(fp32: Path, out: Path, calibration: torch.Tensor) -> dict[str, Any]:
    """Write ``out``, the int8 form of the fp32 ONNX file ``fp32``, calibrated on
    ``calibration`` (the graph's input for real images); what was done, for the metadata."""
    try:
        from onnxruntime.quantization import (
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quant_pre_process,
            quantize_static,
        )
    except ImportError:
        raise CnnkitError("--int8 needs onnxruntime: pip install onnxruntime") from None
    prepared = out.with_name(f".{out.stem}.prepared.onnx")
    try:
        with _quiet():
            # onnx's own shape inference is enough for convolutional graphs; the symbolic one
            # (for transformers' dynamic shapes) fails on an embedding graph's Expand
            quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
            quantize_static(
                str(prepared),
                str(out),
                _Batches(calibration),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
            )
    except CnnkitError:
        raise
    except Exception as exc:  # the quantiser's own failure, in one line
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise CnnkitError(f"int8 quantisation of {fp32.name} failed: {reason}") from None
    finally:
        prepared.unlink(missing_ok=True)
    return {"method": METHOD, "calibration_images": len(calibration)}
