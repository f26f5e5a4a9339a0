"""torchvision's COCO-trained detectors (``--pretrained coco``) with new class heads.

The weights file is found as ImageNet weights are: a file given (``--weights``), then
``<torch hub dir>/checkpoints/<torchvision's file name>``, then a download unless
``CNNKIT_OFFLINE=1``; offline without the file, one line names the file and the folder.
Everything loads but the class-specific layers (their shapes depend on the number of classes),
which keep the fresh initialisation of a model built for the user's classes. torchvision's COCO
files come from models with frozen BatchNorm (no ``num_batches_tracked``); those counters start
at 0.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torchvision
from torch import nn

from cnnkit.errors import CnnkitError
from cnnkit.models.pretrained import load_strict, torchvision_weights_file
from cnnkit.models.weights import load_state_dict_file
from cnnkit.tasks.detect.names import COCO_DETECTORS

# State-dict keys whose shapes depend on the number of classes, per architecture.
CLASS_HEAD_KEYS: dict[str, re.Pattern] = {
    "fasterrcnn": re.compile(r"^roi_heads\.box_predictor\."),
    "fcos": re.compile(r"^head\.classification_head\.cls_logits\."),
    "retinanet": re.compile(r"^head\.classification_head\.cls_logits\."),
    "ssdlite": re.compile(r"^head\.classification_head\.module_list\.\d+\.1\."),
}


def build_torchvision_detector(name: str, num_classes: int) -> nn.Module:
    """torchvision's detector ``name`` for ``num_classes`` (background included where the
    architecture has one), randomly initialised; nothing is downloaded."""
    if name not in COCO_DETECTORS:
        raise CnnkitError(f"'{name}' is not one of torchvision's COCO detectors")
    return torchvision.models.get_model(
        name, weights=None, weights_backbone=None, num_classes=num_classes
    )


def coco_weights_file(name: str, weights_path: str | os.PathLike | None = None) -> Path:
    """The COCO weights file of torchvision's detector ``name`` (a file given, the hub cache, a
    download when online); offline without it, a one-line ``CnnkitError``."""
    return torchvision_weights_file(name, weights_path)


def class_head_keys(model: nn.Module, name: str) -> list[str]:
    """The state-dict keys of ``model`` (torchvision's ``name``) that depend on the classes."""
    pattern = CLASS_HEAD_KEYS[COCO_DETECTORS[name]]
    return [k for k in model.state_dict() if pattern.match(k)]


def load_coco_weights(model: nn.Module, name: str, path: str | os.PathLike) -> None:
    """Load a COCO weights file into ``model`` (torchvision's ``name`` built for any number of
    classes), all but the class-specific layers; a file that does not fit is one line."""
    loaded = load_state_dict_file(path)
    own = model.state_dict()
    fresh = set(class_head_keys(model, name))
    state = {k: v for k, v in loaded.items() if k not in fresh}
    for key in own:
        if key in fresh or (key.endswith(".num_batches_tracked") and key not in loaded):
            state[key] = own[key]
    load_strict(model, state, name, path)
