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


def _cam_class(method: str):
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


def explain(
    classifier: Any,
    images: list[ImageInput],
    method: str = "gradcam",
    layer: str = "auto",
    target: str | None = None,
    out_dir: str | Path | None = None,
) -> list[Explanation]:
    """The ``method`` map of each image for class ``target`` (default: the predicted one), from
    ``layer`` (default: the last spatial feature map); with ``out_dir`` each overlay is written
    there as NNNN-name_METHOD.png."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    if getattr(classifier, "task", None) != "classify":
        raise CnnkitError("explain is for classifiers: load a classifier's run or checkpoint")
    from cnnkit.export.runtime import GraphRunner

    if isinstance(classifier.model, GraphRunner):  # no gradients, no activations to read
        raise CnnkitError("explain needs the checkpoint's network, not an exported file")
    cam_class = _cam_class(method)
    prep = classifier.preprocessing
    model = classifier.model.float().eval()
    layer_name, module = find_target_layer(model, (3, *prep.size), layer)
    wanted = class_index(classifier, target)
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    results: list[Explanation] = []
    with cam_class(model=model, target_layers=[module]) as cam:
        for i, item in enumerate(images):
            original = decode_image(item)
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

                stem = Path(result.source).stem if Path(result.source).suffix else "image"
                path = out / f"{i:04d}-{stem}_{method.replace('+', 'p')}.png"
                Image.fromarray(overlay(original, heat)).save(path)
                result.file = str(path)
            results.append(result)
    return results
