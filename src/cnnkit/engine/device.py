"""Device and precision: resolved once, used through one autocast path."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch

from cnnkit.errors import CnnkitError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` -> cuda if available, else mps, else cpu; an unavailable device is a user error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise CnnkitError(
            f"unknown device '{name}' (valid: auto, cpu, cuda, cuda:N, mps)"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CnnkitError("device 'cuda' requested but no CUDA GPU is available (use --device cpu)")
    if device.type == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise CnnkitError("device 'mps' requested but Apple MPS is not available")
    return device


def tune_backend(device: torch.device) -> None:
    """On CUDA: cuDNN autotuning (the fastest convolution algorithm for each input shape, found
    once; training batches keep one shape). Matrix-product precision is left as torch sets it."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def cpu_has_fast_bf16() -> bool:
    """True when the CPU has native bf16 arithmetic (AVX512-BF16 or AMX), where bf16 pays off."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(flag in flags for flag in (" avx512_bf16", " amx_bf16"))


def resolve_precision(name: str, device: torch.device) -> str:
    """`auto` -> bf16 on GPUs that support it and on CPUs with native bf16 (measured faster for
    the classic CNN in bench/seeds_cnn.py, with the same accuracy), else fp16 on older GPUs, else
    fp32."""
    if name != "auto":
        if name == "fp16" and device.type == "cpu":
            raise CnnkitError("fp16 autocast is for GPUs; use --precision bf16 or fp32 on the CPU")
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu" and cpu_has_fast_bf16():
        return "bf16"
    return "fp32"


@dataclass
class Precision:
    """One autocast context and a grad scaler that is simply disabled unless fp16."""

    device: torch.device
    name: str

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.name == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=DTYPES[self.name])

    def make_scaler(self) -> torch.amp.GradScaler:
        enabled = self.name == "fp16" and self.device.type == "cuda"
        return torch.amp.GradScaler(self.device.type, enabled=enabled)
