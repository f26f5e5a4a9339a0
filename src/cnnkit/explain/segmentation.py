"""Class activation maps for a segmenter's class, as pytorch-grad-cam's segmentation tutorial
makes them, mapped back onto each image's own pixels with the class's predicted outline.

Each image is letterboxed as ``Segmenter.predict`` does; the target is pytorch-grad-cam's
``SemanticSegmentationTarget``: the sum of the class's logits over the pixels predicted as that
class. The class is the one named, or the most frequent predicted class but the background
(class 0). The layer is the backbone's last feature stage unless named (a layer-spec network
without a backbone: its deepest feature map). An image where no pixel is predicted as the class
gets no map and no overlay: its result says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from cnnkit.explain.cam import (
    FLAT_NOTE,
    cam_class,
    class_index,
    is_flat,
    output_folder,
    overlay,
    overlay_file,
    read_image,
    window_to_image,
)
from cnnkit.explain.layers import backbone_layer
from cnnkit.inputs import ImageInput, describe_input

# where the feature extractor sits: cnnkit's FeatureHead, torchvision's segmentation models
BACKBONES = ("net.body", "net.model.backbone")
OUTLINE = (255, 255, 255)


@dataclass
class SegmentationExplanation:
    """One image's map (H, W) in [0, 1] at the image's size for one class, with the mask of
    the pixels predicted as that class; ``heatmap`` is None when no pixel is."""

    source: str
    label: str | None  # the class explained (None: nothing but background was predicted)
    share: float  # the share of the image's pixels predicted as that class
    layer: str
    method: str
    heatmap: np.ndarray | None
    mask: np.ndarray  # bool (H, W): the pixels predicted as the class
    image: np.ndarray  # the RGB uint8 (H, W, 3) it explains
    file: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {"source": self.source, "label": self.label, "share": self.share}
        return {**out, "layer": self.layer, "method": self.method, "file": self.file}

    def summary(self) -> str:
        """One line for the console."""
        if self.heatmap is None:
            which = f"as '{self.label}'" if self.label else "as any class but the background"
            return f"{self.source}: no pixel predicted {which}: no overlay written"
        flat = FLAT_NOTE if is_flat(self.heatmap) else ""
        return f"{self.source}: {self.label} on {self.share:.1%} of the pixels -> {self.file}{flat}"


def explain_segmentation(
    segmenter: Any,
    images: list[ImageInput],
    method: str = "gradcam",
    layer: str = "auto",
    target: str | None = None,
    out_dir: str | Path | None = None,
) -> list[SegmentationExplanation]:
    """The ``method`` map of each image for class ``target`` (default: the most frequent
    predicted class but the background) over the pixels predicted as it, from ``layer``."""
    from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget

    cam_type = cam_class(method)
    model = segmenter.model.float().eval()
    size = segmenter.size
    layer_name, module = backbone_layer(model, (3, size, size), BACKBONES, layer)
    wanted = class_index(segmenter, target)
    out = output_folder(out_dir)
    results: list[SegmentationExplanation] = []
    with cam_type(model=model, target_layers=[module]) as cam:
        for i, item in enumerate(images):
            original = read_image(item)
            x, win = _model_input(segmenter, original)
            with torch.no_grad():
                logits = model(x)[0].float()  # (C, size, size)
            predicted = _classes_at_image_size(logits, win)
            index = wanted if wanted is not None else _most_frequent(predicted)
            mask = predicted == index if index is not None else np.zeros_like(predicted, bool)
            label = None if index is None else segmenter.classes[index]
            result = SegmentationExplanation(
                describe_input(item),
                label,
                float(mask.mean()),
                layer_name,
                method,
                None,
                mask,
                original,
            )
            on_canvas = _canvas_mask(logits, index, win)
            if index is not None and on_canvas.any():
                score = SemanticSegmentationTarget(index, on_canvas.astype(np.float32))
                heat = cam(input_tensor=x.requires_grad_(), targets=[score])[0]
                top, left = win.top, win.left
                inner = (win.inner_height, win.inner_width)
                result.heatmap = window_to_image(heat, top, left, inner, original.shape[:2])
                if out is not None:
                    result.file = str(_write(result, overlay_file(out, i, result.source, method)))
            results.append(result)
    return results


def _model_input(segmenter: Any, original: np.ndarray) -> tuple[torch.Tensor, Any]:
    """The (1, 3, size, size) float input in [0, 1] that predict would give the network, and
    the image's window on it."""
    from cnnkit.tasks.segment.batch import letterbox

    pixels = torch.from_numpy(np.require(original, requirements=["C", "W"])).permute(2, 0, 1)
    canvas, _, win = letterbox(pixels, None, segmenter.size)
    return canvas[None].to(segmenter.device).float() / 255.0, win


def _classes_at_image_size(logits: torch.Tensor, win: Any) -> np.ndarray:
    """Each pixel's predicted class at the image's own size, as Segmenter.predict gives it."""
    from cnnkit.tasks.segment.batch import classes_in_window

    return classes_in_window(logits.softmax(0).cpu(), win).numpy()


def _most_frequent(predicted: np.ndarray) -> int | None:
    """The class (not the background, 0) predicted on the most pixels; None if none is."""
    counts = np.bincount(predicted.reshape(-1))
    counts[0] = 0
    return int(counts.argmax()) if counts.any() else None


def _canvas_mask(logits: torch.Tensor, index: int | None, win: Any) -> np.ndarray:
    """Where the network predicts ``index`` on its input, inside the image's window (the
    letterbox's padding is not the image): the pixels SemanticSegmentationTarget sums over."""
    mask = np.zeros(logits.shape[-2:], bool)
    if index is None:
        return mask
    rows = slice(win.top, win.top + win.inner_height)
    cols = slice(win.left, win.left + win.inner_width)
    mask[rows, cols] = (logits.argmax(0) == index).cpu().numpy()[rows, cols]
    return mask


def outline(mask: np.ndarray, width: int = 1) -> np.ndarray:
    """bool (H, W): the pixels of ``mask`` within ``width`` of its edge."""
    inside = torch.from_numpy(mask)[None, None].float()
    kernel = 2 * width + 1
    eroded = -F.max_pool2d(-inside, kernel, stride=1, padding=width)
    return (inside - eroded)[0, 0].numpy() > 0


def _write(result: SegmentationExplanation, path: Path) -> Path:
    """The map over the image, with the outline of the pixels predicted as the class."""
    from PIL import Image

    assert result.heatmap is not None
    blended = overlay(result.image, result.heatmap)
    width = max(1, round(max(result.mask.shape) / 300))
    blended[outline(result.mask, width)] = OUTLINE
    Image.fromarray(blended).save(path)
    return path
