"""Class activation maps with pytorch-grad-cam, mapped back onto each image's own pixels.

``explain`` runs Grad-CAM, Grad-CAM++, LayerCAM or EigenCAM (pytorch-grad-cam's
implementations) on a Classifier's model for the predicted class or a named one, and returns
each map at the original image's size: the network saw a resized (stretched, centre-cropped
or letterboxed) copy, so the map is placed back where that copy came from (outside a centre
crop the map is 0: the model never saw those pixels).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cnnkit import inputs
from cnnkit.data import decode_image
from cnnkit.errors import CnnkitError, did_you_mean
from cnnkit.explain.layers import find_target_layer
from cnnkit.inputs import ImageInput, describe_input

METHODS = ("gradcam", "gradcam++", "layercam", "eigencam")


@dataclass
class Explanation:
    """One image's map (H, W) in [0, 1] at the image's size, for one class (NaN where a centre
    crop left pixels out of the model's view)."""

    source: str
    label: str  # the class explained
    probability: float  # the model's probability for it
    predicted: str  # the model's top class
    layer: str
    method: str
    heatmap: np.ndarray
    image: np.ndarray  # the RGB uint8 (H, W, 3) it explains
    file: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in ("source", "label", "probability", "predicted")}
        return {**out, "layer": self.layer, "method": self.method, "file": self.file}

    def summary(self) -> str:
        """One line for the console."""
        note = "" if self.label == self.predicted else f" (predicted: {self.predicted})"
        flat = FLAT_NOTE if is_flat(self.heatmap) else ""
        return f"{self.source}: {self.label} {self.probability:.1%}{note} -> {self.file}{flat}"


def cam_class(method: str) -> type:
    from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, LayerCAM

    table = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "layercam": LayerCAM}
    table["eigencam"] = EigenCAM
    if method not in table:
        raise did_you_mean("CAM method", method, METHODS)
    return table[method]


def to_image_pixels(cam: np.ndarray, height: int, width: int, prep: Any) -> np.ndarray:
    """A map over the model's input (H', W') -> over the original (height, width) image; NaN
    outside a centre crop, where the model saw nothing."""
    in_h, in_w = cam.shape
    tensor = torch.from_numpy(np.ascontiguousarray(cam, dtype=np.float32))[None, None]
    if prep.resize == "stretch":
        return F.interpolate(tensor, size=(height, width), mode="bilinear")[0, 0].numpy()
    if prep.resize == "pad":  # letterboxed: cut the image's part out of the canvas
        scale = min(in_w / width, in_h / height)
        inner_w, inner_h = round(width * scale), round(height * scale)
        left, top = (in_w - inner_w) // 2, (in_h - inner_h) // 2
        inner = tensor[..., top : top + inner_h, left : left + inner_w]
        return F.interpolate(inner, size=(height, width), mode="bilinear")[0, 0].numpy()
    # centre crop (after a resize to size / crop_pct): the map covers the middle of the image
    crop_pct = float(prep.extra.get("crop_pct", 1.0))
    scale = max(in_w / crop_pct / width, in_h / crop_pct / height)
    seen_w, seen_h = min(width, round(in_w / scale)), min(height, round(in_h / scale))
    left, top = (width - seen_w) // 2, (height - seen_h) // 2
    out = np.full((height, width), np.nan, np.float32)  # the model never saw these pixels
    resized = F.interpolate(tensor, size=(seen_h, seen_w), mode="bilinear")[0, 0].numpy()
    out[top : top + seen_h, left : left + seen_w] = resized
    return out


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The map in matplotlib's 'jet' colours blended over the RGB image (uint8); pixels the
    model did not see (NaN) are left as they are."""
    from matplotlib import colormaps

    seen = ~np.isnan(heatmap)
    colours = colormaps["jet"](np.clip(np.nan_to_num(heatmap), 0, 1))[..., :3] * 255
    blend = np.where(seen[..., None], alpha, 0.0)
    return (image * (1 - blend) + colours * blend).round().clip(0, 255).astype(np.uint8)


def class_index(classifier: Any, name: str | None) -> int | None:
    if name is None:
        return None
    if name in classifier.classes:
        return classifier.classes.index(name)
    if name.isdigit() and int(name) < len(classifier.classes):
        return int(name)
    raise did_you_mean("class", name, classifier.classes)


def window_to_image(
    cam: np.ndarray, top: int, left: int, inner: tuple[int, int], size: tuple[int, int]
) -> np.ndarray:
    """A map over a letterboxed canvas -> over the (height, width) image: the image's window
    (``inner`` = its (h, w) on the canvas at (top, left)) cut out and resized bilinearly."""
    tensor = torch.from_numpy(np.ascontiguousarray(cam, dtype=np.float32))[None, None]
    window = tensor[..., top : top + inner[0], left : left + inner[1]]
    return F.interpolate(window, size=size, mode="bilinear")[0, 0].numpy()


def read_image(item: ImageInput) -> np.ndarray:
    """The RGB uint8 (H, W, 3) of an input; an unreadable one is one line naming it."""
    try:
        return decode_image(item)
    except CnnkitError as exc:
        name, message = describe_input(item), str(exc)
        raise CnnkitError(message if name in message else f"{name}: {message}") from None


def is_flat(heatmap: np.ndarray | None) -> bool:
    """Whether a map is one value everywhere (Grad-CAM gives 0 everywhere when no part of the
    layer raises the score: its ReLU leaves nothing)."""
    if heatmap is None or np.isnan(heatmap).all():
        return False
    return bool(np.nanmax(heatmap) - np.nanmin(heatmap) < 1e-6)


FLAT_NOTE = " (a flat map: nothing in this layer raises the score; try gradcam++ or eigencam)"


def overlay_file(out: Path, index: int, source: str, method: str) -> Path:
    """Where an overlay goes: out/NNNN-name_METHOD.png (gradcam++ -> gradcampp)."""
    stem = Path(source).stem if Path(source).suffix else "image"
    return out / f"{index:04d}-{stem}_{method.replace('+', 'p')}.png"


def check_network(predictor: Any) -> None:
    """CAMs need the checkpoint's own network: an exported file has no gradients to read."""
    from cnnkit.export.runtime import GraphRunner

    if isinstance(predictor.model, GraphRunner):
        raise CnnkitError("explain needs the checkpoint's network, not an exported file")


def output_folder(out_dir: str | Path | None) -> Path | None:
    """The folder explanations are written into (made; one line when it cannot be), or None."""
    if out_dir is None:
        return None
    return inputs.output_folder(out_dir, "explanations")


EXPLAINED_TASKS = ("classify", "detect", "segment")


def explain(
    predictor: Any,
    images: list[ImageInput],
    method: str = "gradcam",
    layer: str = "auto",
    target: str | None = None,
    out_dir: str | Path | None = None,
    conf: float | None = None,
) -> list[Any]:
    """Class activation maps over images, for a classifier, a detector or a segmenter (the
    result types: Explanation, DetectionExplanation, SegmentationExplanation). ``target`` is a
    class name: the class explained (classifier: default the predicted one), the boxes kept
    (detector: default all), the class whose pixels are explained (segmenter: default the
    most frequent predicted one but the background). ``conf`` is a detector's score threshold
    (default: the checkpoint's). With ``out_dir`` each overlay is written there as
    NNNN-name_METHOD.png."""
    task = getattr(predictor, "task", None)
    if task not in EXPLAINED_TASKS:
        raise CnnkitError(
            f"explain is for classifiers, detectors and segmenters, not a {task} model"
        )
    check_network(predictor)
    if conf is not None and task != "detect":
        raise CnnkitError("--conf is for detectors")
    if task == "detect":
        from cnnkit.explain.detection import explain_detections

        return explain_detections(predictor, images, method, layer, target, out_dir, conf)
    if task == "segment":
        from cnnkit.explain.segmentation import explain_segmentation

        return explain_segmentation(predictor, images, method, layer, target, out_dir)
    return explain_classes(predictor, images, method, layer, target, out_dir)


def explain_classes(
    classifier: Any,
    images: list[ImageInput],
    method: str = "gradcam",
    layer: str = "auto",
    target: str | None = None,
    out_dir: str | Path | None = None,
) -> list[Explanation]:
    """A classifier's ``method`` map of each image for class ``target`` (default: the predicted
    one), from ``layer`` (default: the last spatial feature map)."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cam_type = cam_class(method)
    prep = classifier.preprocessing
    model = classifier.model.float().eval()
    layer_name, module = find_target_layer(model, (3, *prep.size), layer)
    wanted = class_index(classifier, target)
    out = output_folder(out_dir)
    results: list[Explanation] = []
    with cam_type(model=model, target_layers=[module]) as cam:
        for i, item in enumerate(images):
            original = read_image(item)
            pixels = torch.from_numpy(np.array(classifier.decode(original))).permute(2, 0, 1)[None]
            x = prep.to_input(pixels.contiguous()).to(classifier.device)
            with torch.no_grad():
                probs = model(x).float().softmax(1)[0]
            predicted = int(probs.argmax())
            index = predicted if wanted is None else wanted
            heat = cam(input_tensor=x, targets=[ClassifierOutputTarget(index)])[0]
            heat = to_image_pixels(heat, original.shape[0], original.shape[1], prep)
            result = Explanation(
                describe_input(item),
                classifier.classes[index],
                float(probs[index]),
                classifier.classes[predicted],
                layer_name,
                method,
                heat,
                original,
            )
            if out is not None:
                from PIL import Image

                path = overlay_file(out, i, result.source, method)
                Image.fromarray(overlay(original, heat)).save(path)
                result.file = str(path)
            results.append(result)
    return results
