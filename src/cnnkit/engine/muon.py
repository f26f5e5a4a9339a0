"""Muon (momentum orthogonalised by Newton-Schulz) for convolution filters, with SGD for the rest.

Muon (Keller Jordan, 2024, https://kellerjordan.github.io/posts/muon/) replaces each filter
tensor's momentum update by the nearest semi-orthogonal matrix (approximately U V^T of its SVD),
computed by a few quintic Newton-Schulz iterations in bf16. airbench94_muon trains its CIFAR-10
convolutions this way and everything else (biases, the linear head) with Nesterov SGD.

Written here rather than taken from ``torch.optim.Muon`` because that one exists only from
torch 2.9 (cnnkit supports 2.5) and takes 2-D parameters only, where a convolution filter
(out, in, kh, kw) is orthogonalised as the (out, in * kh * kw) matrix; and because the trainer
keeps one optimiser per stage (one schedule, one checkpoint state), so the SGD-updated groups
live in the same optimiser, marked ``muon=False``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

# Quintic Newton-Schulz coefficients chosen to raise small singular values fast (the published
# Muon ones): a few steps give singular values spread around 1 instead of exactly 1, which
# trains as well as the exact orthogonalisation.
_NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def orthogonalize(matrix: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """Approximately U V^T for the SVD U S V^T of a 2-D `matrix`, by Newton-Schulz in bf16."""
    if matrix.ndim != 2:
        raise ValueError(f"orthogonalize takes a matrix, got shape {tuple(matrix.shape)}")
    a, b, c = _NS_COEFFICIENTS
    x = matrix.to(torch.bfloat16)
    wide = x.shape[0] <= x.shape[1]
    if not wide:  # iterate on the smaller Gram matrix
        x = x.T
    x = x / (x.norm() + 1e-7)  # every singular value <= 1, where the iteration converges
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * (gram @ gram)) @ x
    return x if wide else x.T


class Muon(torch.optim.Optimizer):
    """Muon for groups with ``muon=True``, SGD (torch's update rule) for groups with
    ``muon=False``.

    Both keep a momentum buffer ``buf = momentum * buf + grad`` (the first one is the gradient)
    and step along ``grad + momentum * buf`` with ``nesterov``, else ``buf``; ``weight_decay``
    is added to the gradient (classic L2, as torch's SGD). A Muon group orthogonalises that
    direction (``ns_steps`` Newton-Schulz iterations) before stepping by ``lr``; with
    ``normalize`` it first rescales each tensor to norm sqrt(out_channels), as airbench94_muon
    does, so the step stays the same size relative to the weights: right for filters followed by
    normalisation (BatchNorm), whose output does not depend on their scale.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 0.02,
        momentum: float = 0.95,
        nesterov: bool = True,
        weight_decay: float = 0.0,
        ns_steps: int = 5,
        normalize: bool = False,
        muon: bool = True,
    ) -> None:
        if lr < 0 or momentum < 0 or weight_decay < 0 or ns_steps < 1:
            raise ValueError("Muon needs lr, momentum, weight_decay >= 0 and ns_steps >= 1")
        defaults = dict(
            lr=lr,
            momentum=momentum,
            nesterov=nesterov,
            weight_decay=weight_decay,
            ns_steps=ns_steps,
            normalize=normalize,
            muon=muon,
        )
        super().__init__(params, defaults)
        for group in self.param_groups:
            if group["muon"] and any(p.ndim < 2 for p in group["params"]):
                raise ValueError("Muon groups take matrices or filters (2 or more dimensions)")

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, momentum = group["lr"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                direction = p.grad
                if group["weight_decay"]:
                    direction = direction.add(p, alpha=group["weight_decay"])
                if momentum:
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = direction.clone()
                    else:
                        state["momentum_buffer"].mul_(momentum).add_(direction)
                    buf = state["momentum_buffer"]
                    direction = direction.add(buf, alpha=momentum) if group["nesterov"] else buf
                if group["muon"]:
                    if group["normalize"]:
                        p.mul_(math.sqrt(p.shape[0]) / p.norm().clamp_min(1e-12))
                    flat = orthogonalize(direction.reshape(len(direction), -1), group["ns_steps"])
                    direction = flat.reshape(p.shape).to(p.dtype)
                p.add_(direction, alpha=-lr)
        return loss
