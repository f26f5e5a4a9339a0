"""Class activation maps for a detector's boxes, as pytorch-grad-cam's detection tutorial makes
them, mapped back onto each image's own pixels with the boxes drawn.

Each image is letterboxed as ``Detector.predict`` does and detected once at the run's
thresholds (or ``conf``); the boxes kept (all, or those of one class) become one
``FasterRCNNBoxScoreTarget``: the sum, over the kept boxes, of the score and IoU of the
detection that still matches each one. Grad-CAM and its relatives back-propagate that sum;
EigenCAM needs no target (the first principal component of the layer's activations). The
layer is the backbone's last feature stage (C5, read by every pyramid level) unless named.
An image with no box to explain gets no map and no overlay: its result says so.
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

# where the feature extractor sits in cnnkit's detectors and torchvision's COCO ones
BACKBONES = ("model.backbone.body", "model.backbone.features", "model.backbone")


@dataclass
class DetectionExplanation:
    """One image's boxes (in its own pixels) and the map (H, W) in [0, 1] at the image's size
    that explains them together; ``heatmap`` is None when no box was found to explain."""

    source: str
    label: str | None  # the class whose boxes are explained (None: every class)
    boxes: list[Any]  # cnnkit.tasks.detect.predictor.Box, best first
    conf: float  # the score threshold the boxes passed
    layer: str
    method: str
    heatmap: np.ndarray | None
    image: np.ndarray  # the RGB uint8 (H, W, 3) it explains
    file: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "label": self.label,
            "conf": self.conf,
            "boxes": [b.to_dict() for b in self.boxes],
            "layer": self.layer,
            "method": self.method,
            "file": self.file,
        }

    def summary(self) -> str:
        """One line for the console."""
        if not self.boxes:
            which = f"'{self.label}' " if self.label else ""
            return f"{self.source}: no {which}box scoring >= {self.conf:.2f}: no overlay written"
        shown = ", ".join(f"{b.label} {b.score:.2f}" for b in self.boxes[:5])
        more = f", +{len(self.boxes) - 5} more" if len(self.boxes) > 5 else ""
        count = f"{len(self.boxes)} box{'es' if len(self.boxes) > 1 else ''}"
        flat = FLAT_NOTE if is_flat(self.heatmap) else ""
        return f"{self.source}: {count} ({shown}{more}) -> {self.file}{flat}"


def explain_detections(
    detector: Any,
    images: list[ImageInput],
    method: str = "gradcam",
    layer: str = "auto",
    target: str | None = None,
    out_dir: str | Path | None = None,
    conf: float | None = None,
) -> list[DetectionExplanation]:
    """The ``method`` map of each image's detected boxes (those of class ``target``, or all),
    at score threshold ``conf`` (default: the checkpoint's), from ``layer``."""
    from pytorch_grad_cam.utils.model_targets import FasterRCNNBoxScoreTarget

    cam_type = cam_class(method)
    model = detector.model.float().eval()
    size = detector.size
    layer_name, module = backbone_layer(model, (3, size, size), BACKBONES, layer)
    wanted = class_index(detector, target)
    out = output_folder(out_dir)
    results: list[DetectionExplanation] = []
    with (
        detector.using(conf, None) as settings,
        cam_type(model=model, target_layers=[module]) as cam,
    ):
        threshold = settings.score_threshold
        for i, item in enumerate(images):
            original = read_image(item)
            x, batch = _model_input(detector, original)
            with torch.no_grad():
                found = model(x)[0]
            keep = torch.ones_like(found["labels"], dtype=torch.bool)
            if wanted is not None:
                keep = found["labels"] == wanted
            boxes, labels = found["boxes"][keep], found["labels"][keep]
            result = DetectionExplanation(
                describe_input(item),
                None if wanted is None else detector.classes[wanted],
                _shown_boxes(detector, batch, original, boxes, labels, found["scores"][keep]),
                threshold,
                layer_name,
                method,
                None,
                original,
            )
            if len(boxes):
                score = FasterRCNNBoxScoreTarget(labels, boxes)
                heat = cam(input_tensor=x.requires_grad_(), targets=[score])[0]
                heat = _on_input(model, x, heat)
                result.heatmap = _to_image(heat, batch, original.shape[:2])
                if out is not None:
                    result.file = str(_write(result, overlay_file(out, i, result.source, method)))
            results.append(result)
    return results


def _model_input(detector: Any, original: np.ndarray) -> tuple[torch.Tensor, Any]:
    """The (1, 3, H', W') float input in [0, 1] that predict would give the network, and the
    resized batch that says where the image sits on it."""
    from cnnkit.tasks.detect.batch import resize_batch
    from cnnkit.tasks.detect.predictor import shrink_to

    stored = shrink_to(original, detector.size)
    batch = resize_batch([stored], None, detector.size, detector.mode)
    images = batch.images if isinstance(batch.images, torch.Tensor) else batch.images[0][None]
    return images.to(detector.device).float() / 255.0, batch


def _shown_boxes(
    detector: Any,
    batch: Any,
    original: np.ndarray,
    boxes: torch.Tensor,
    labels: torch.Tensor,
    scores: torch.Tensor,
) -> list[Any]:
    """Boxes in the network's input pixels -> Box objects in the original image's pixels."""
    from cnnkit.tasks.detect.inference import scale_boxes
    from cnnkit.tasks.detect.predictor import Box

    height, width = original.shape[:2]
    stored_h, stored_w = batch.stored_sizes[0]
    on_stored = batch.to_stored(boxes.detach().float().cpu(), 0)
    placed = scale_boxes(on_stored, width / stored_w, height / stored_h, height, width)
    return [
        Box(detector.classes[int(label)], float(score), [round(float(v), 2) for v in box])
        for box, label, score in zip(placed, labels, scores, strict=True)
    ]


def _on_input(model: torch.nn.Module, x: torch.Tensor, heat: np.ndarray) -> np.ndarray:
    """pytorch-grad-cam stretches the map over the input it was given, but the detector's own
    transform pads that input to a multiple of 32 (and may resize it) before the backbone sees
    it: the map is put back over the part of the padded canvas that holds the input."""
    transform = getattr(getattr(model, "model", None), "transform", None)
    if transform is None:
        return heat
    with torch.no_grad():
        seen, _ = transform([x[0].detach()])
    padded, inner = tuple(seen.tensors.shape[-2:]), tuple(seen.image_sizes[0])
    if padded == inner:
        return heat
    tensor = torch.from_numpy(np.ascontiguousarray(heat, dtype=np.float32))[None, None]
    canvas = F.interpolate(tensor, size=padded, mode="bilinear")[..., : inner[0], : inner[1]]
    return F.interpolate(canvas, size=tuple(x.shape[-2:]), mode="bilinear")[0, 0].numpy()


def _to_image(heat: np.ndarray, batch: Any, size: tuple[int, int]) -> np.ndarray:
    """The map over the network's input -> over the original image (the letterbox's padding
    cut off)."""
    (sx, sy), (px, py) = batch.scales[0], batch.pads[0]
    stored_h, stored_w = batch.stored_sizes[0]
    inner = (max(1, round(stored_h * sy)), max(1, round(stored_w * sx)))
    return window_to_image(heat, py, px, inner, size)


def _write(result: DetectionExplanation, path: Path) -> Path:
    """The map over the image, with the explained boxes outlined and labelled."""
    from cnnkit.tasks.detect.draw import draw_boxes, save_png

    assert result.heatmap is not None
    blended = overlay(result.image, result.heatmap)
    boxes = torch.tensor([b.box for b in result.boxes], dtype=torch.float32).reshape(-1, 4)
    names = [f"{b.label} {b.score:.2f}" for b in result.boxes]
    return save_png(draw_boxes(blended, boxes, names), path)
