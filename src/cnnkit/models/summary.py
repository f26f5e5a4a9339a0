"""Keras-like model summaries: per-layer output shapes and parameter counts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from cnnkit.errors import CnnkitError


@dataclass
class SummaryRow:
    """One leaf module call: name, type, output shape (no batch dimension), parameters."""

    name: str
    type: str
    output_shape: tuple[int, ...] | None
    params: int


@dataclass
class ModelSummary:
    """Rows in call order plus totals; ``str()`` gives a Keras-like table."""

    rows: list[SummaryRow]
    total_params: int
    trainable_params: int
    input_size: tuple[int, ...] = ()
    name: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def non_trainable_params(self) -> int:
        return self.total_params - self.trainable_params

    def __str__(self) -> str:
        header = ("Layer (type)", "Output Shape", "Param #")
        body = [
            (f"{r.name} ({r.type})", _fmt_shape(r.output_shape), f"{r.params:,}") for r in self.rows
        ]
        w0 = max(len(header[0]), *(len(b[0]) for b in body)) if body else len(header[0])
        w1 = max(len(header[1]), *(len(b[1]) for b in body)) if body else len(header[1])
        w2 = max(len(header[2]), *(len(b[2]) for b in body)) if body else len(header[2])
        width = w0 + w1 + w2 + 4

        def line(cells: tuple[str, str, str]) -> str:
            return f"{cells[0]:<{w0}}  {cells[1]:<{w1}}  {cells[2]:>{w2}}"

        out = []
        if self.name:
            out.append(f'Model: "{self.name}"')
        out += ["_" * width, line(header), "=" * width]
        out += [line(b) for b in body]
        out += [
            "=" * width,
            f"Total params: {self.total_params:,}",
            f"Trainable params: {self.trainable_params:,}",
            f"Non-trainable params: {self.non_trainable_params:,}",
        ]
        if self.input_size:
            out.append(f"Input size: {_fmt_shape(tuple(self.input_size))}")
        out.append("_" * width)
        return "\n".join(out)


def _fmt_shape(shape: tuple[int, ...] | None) -> str:
    return "?" if shape is None else "(" + ", ".join(str(d) for d in shape) + ")"


def _out_shape(out: Any) -> tuple[int, ...] | None:
    if isinstance(out, torch.Tensor):
        return tuple(out.shape[1:])
    if isinstance(out, (tuple, list)):
        for item in out:
            if isinstance(item, torch.Tensor):
                return tuple(item.shape[1:])
    return None


def summarize(
    model: nn.Module, input_size: tuple[int, ...], *, name: str | None = None
) -> ModelSummary:
    """Run a dummy batch of 1 (eval mode, no grad) through ``model`` and record each leaf module.

    A module called several times gives several rows; its parameters count on the first only.
    """
    rows: list[SummaryRow] = []
    counted: set[int] = set()

    def hook_for(name: str):
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            params = 0
            if id(module) not in counted:
                counted.add(id(module))
                params = sum(p.numel() for p in module.parameters(recurse=False))
            rows.append(SummaryRow(name, type(module).__name__, _out_shape(output), params))

        return hook

    leaves = [(n, m) for n, m in model.named_modules() if next(m.children(), None) is None]
    handles = [m.register_forward_hook(hook_for(n or type(m).__name__)) for n, m in leaves]
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_size, device=device, dtype=dtype))
    except (RuntimeError, AssertionError) as e:
        msg = (str(e).strip().splitlines() or [type(e).__name__])[0]
        size = "x".join(str(d) for d in input_size)
        raise CnnkitError(f"the model cannot run on a {size} input: {msg}") from None
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    model_name = type(model).__name__ if name is None else name
    return ModelSummary(rows, total, trainable, tuple(input_size), model_name)
