"""The seeds' explanation made visible: a first layer's filters and a layer's feature maps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.utils import make_grid

from cnnkit.data import decode_image
from cnnkit.explain.layers import find_target_layer, first_conv
from cnnkit.inputs import ImageInput


def _unit(x: torch.Tensor) -> torch.Tensor:
    """Each item (dim 0) scaled to [0, 1] on its own."""
    flat = x.reshape(len(x), -1)
    low, high = flat.min(1).values, flat.max(1).values
    scale = (high - low).clamp_min(1e-12)
    return (x - low.view(-1, *[1] * (x.ndim - 1))) / scale.view(-1, *[1] * (x.ndim - 1))


def _save_grid(grid: torch.Tensor, path: Path, tile: int, cell: int) -> Path:
    """A (3, H, W) grid in [0, 1], each cell of `cell` px enlarged (nearest) to about `tile`."""
    image = (grid.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    factor = max(1, tile // max(cell, 1))
    picture = Image.fromarray(image).resize(
        (image.shape[1] * factor, image.shape[0] * factor), Image.Resampling.NEAREST
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path)
    return path


def draw_filters(classifier: Any, path: str | Path, tile: int = 48) -> tuple[str, Path]:
    """The first convolution's filters as a grid (RGB when they read 3 channels); returns the
    layer's name and the file."""
    name, conv = first_conv(classifier.model)
    weights = conv.weight.detach().float().cpu()  # (out, in, k, k)
    if weights.shape[1] == 3:
        cells = _unit(weights)
    else:  # a filter over other channels: its mean over them, in grey
        cells = _unit(weights.mean(1, keepdim=True)).expand(-1, 3, -1, -1)
    rows = int(np.ceil(np.sqrt(len(cells))))
    grid = make_grid(cells, nrow=rows, padding=1, pad_value=1.0)
    return name, _save_grid(grid, Path(path), tile, weights.shape[-1])


def draw_features(
    classifier: Any,
    image: ImageInput,
    path: str | Path,
    layer: str = "auto",
    max_maps: int = 64,
    tile: int = 96,
) -> tuple[str, Path]:
    """One image's feature maps at ``layer`` (default: the last spatial one), the first
    ``max_maps`` channels as a grid (each scaled on its own, 'viridis'); returns the layer's
    name and the file."""
    from matplotlib import colormaps

    prep = classifier.preprocessing
    model = classifier.model.float().eval()
    name, module = find_target_layer(model, (3, *prep.size), layer)
    captured: list[torch.Tensor] = []
    hook = module.register_forward_hook(lambda _m, _i, out: captured.append(out.detach()))
    try:
        pixels = np.array(classifier.decode(decode_image(image)))
        pixels = torch.from_numpy(pixels).permute(2, 0, 1)[None]
        with torch.no_grad():
            model(prep.to_input(pixels.contiguous()).to(classifier.device))
    finally:
        hook.remove()
    maps = _unit(captured[0][0, :max_maps].float().cpu())  # (C, h, w)
    coloured = torch.from_numpy(colormaps["viridis"](maps.numpy())[..., :3]).permute(0, 3, 1, 2)
    rows = int(np.ceil(np.sqrt(len(coloured))))
    grid = make_grid(coloured.float(), nrow=rows, padding=1, pad_value=1.0)
    return name, _save_grid(grid, Path(path), tile, maps.shape[-1])
