"""Which model names are detectors (kept tiny: the task registry asks it for every run)."""

from __future__ import annotations

DETECTION_ARCHITECTURES = ("fcos", "retinanet", "ssdlite", "fasterrcnn")


def is_detector(model: str) -> bool:
    """True for `fcos`, `fcos_mobilenet_v2`, ... (an architecture, optionally _backbone)."""
    return str(model).split("_", 1)[0] in DETECTION_ARCHITECTURES
