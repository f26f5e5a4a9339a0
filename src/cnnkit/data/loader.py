"""Batches over an in-memory ImageSet, sliced on the device: no per-sample Python, no workers.

The whole set is moved to the device once (and kept on the ImageSet, one copy per device); an
epoch is a ``torch.randperm`` drawn from the caller's generator, so a resumed run that restores
the generator state reproduces its batches exactly.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from cnnkit.data.imageset import ImageSet


def _on_device(data: ImageSet, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    if data.images.device == device:
        return data.images, data.labels
    key = str(device)
    if key not in data._on_device:
        data._on_device[key] = (data.images.to(device), data.labels.to(device))
    return data._on_device[key]


def num_batches(n: int, batch_size: int, drop_last: bool = False) -> int:
    """How many batches iterate_batches yields for ``n`` images."""
    return n // batch_size if drop_last else -(-n // batch_size)


def iterate_batches(
    data: ImageSet,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None = None,
    device: str | torch.device = "cpu",
    drop_last: bool = False,
    with_indices: bool = False,
    weights: torch.Tensor | None = None,
) -> Iterator[tuple[torch.Tensor, ...]]:
    """Yield (uint8 images (B, 3, H, W), int64 labels (B,)) on ``device``; ``with_indices``
    adds each batch's positions in ``data`` (int64 (B,), on the CPU) as a third item.

    With ``shuffle``, the order is ``torch.randperm(len(data), generator=generator)`` (drawn on
    the CPU when the epoch starts); otherwise the stored order, as views of the device copy.
    With ``shuffle`` and per-image ``weights``, an epoch is ``len(data)`` draws with
    replacement in proportion to them (``torch.multinomial``: a balanced sampler).
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    images, labels = _on_device(data, device)
    n = len(data)
    end = n - n % batch_size if drop_last else n
    if not shuffle:
        for start in range(0, end, batch_size):
            batch = images[start : start + batch_size], labels[start : start + batch_size]
            if with_indices:
                batch += (torch.arange(start, min(start + batch_size, n)),)
            yield batch
        return
    if weights is not None:
        order_cpu = torch.multinomial(weights.double(), n, replacement=True, generator=generator)
    else:
        order_cpu = torch.randperm(n, generator=generator)
    order = order_cpu.to(device)
    for start in range(0, end, batch_size):
        idx = order[start : start + batch_size]
        batch = images.index_select(0, idx), labels.index_select(0, idx)
        if with_indices:
            batch += (order_cpu[start : start + batch_size],)
        yield batch


def channel_stats(
    data: ImageSet, chunk: int = 4096
) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Per-channel mean and std of the pixels scaled to [0, 1], summed in float64 chunks."""
    if len(data) == 0:
        raise ValueError("channel_stats of an empty ImageSet")
    total = torch.zeros(3, dtype=torch.float64)
    total_sq = torch.zeros(3, dtype=torch.float64)
    for start in range(0, len(data), chunk):
        x = data.images[start : start + chunk].to(torch.float64).div_(255.0)
        total += x.sum(dim=(0, 2, 3))
        total_sq += x.square_().sum(dim=(0, 2, 3))
    count = data.images.numel() // 3
    mean = total / count
    std = (total_sq / count - mean.square()).clamp_min(0).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())  # type: ignore[return-value]
