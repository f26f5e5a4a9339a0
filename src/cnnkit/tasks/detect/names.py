"""Which model names are detectors (kept light: the task registry asks it for every run)."""

from __future__ import annotations

DETECTION_ARCHITECTURES = ("fcos", "retinanet", "ssdlite", "fasterrcnn")

# torchvision's COCO-trained detectors (--pretrained coco) -> cnnkit architecture
COCO_DETECTORS: dict[str, str] = {
    "fasterrcnn_mobilenet_v3_large_320_fpn": "fasterrcnn",
    "fasterrcnn_mobilenet_v3_large_fpn": "fasterrcnn",
    "fasterrcnn_resnet50_fpn": "fasterrcnn",
    "fasterrcnn_resnet50_fpn_v2": "fasterrcnn",
    "fcos_resnet50_fpn": "fcos",
    "retinanet_resnet50_fpn": "retinanet",
    "retinanet_resnet50_fpn_v2": "retinanet",
    "ssdlite320_mobilenet_v3_large": "ssdlite",
}


def is_detector(model: str) -> bool:
    """True for `fcos`, `fcos_mobilenet_v2`, ... (an architecture, optionally _backbone) and
    for torchvision's COCO detectors by name."""
    name = str(model).strip().lower()
    return name in COCO_DETECTORS or name.split("_", 1)[0] in DETECTION_ARCHITECTURES
