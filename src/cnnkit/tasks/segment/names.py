"""Which model names are segmenters (kept light: the task registry asks it for every run)."""

from __future__ import annotations

SEGMENTATION_ARCHITECTURES = ("fcn", "deeplabv3", "deeplabv3plus", "lraspp")

# torchvision's segmentation models trained on a COCO subset with VOC's 21 classes
# (--pretrained coco) -> cnnkit architecture
COCO_SEGMENTERS: dict[str, str] = {
    "fcn_resnet50": "fcn",
    "fcn_resnet101": "fcn",
    "deeplabv3_resnet50": "deeplabv3",
    "deeplabv3_resnet101": "deeplabv3",
    "deeplabv3_mobilenet_v3_large": "deeplabv3",
    "lraspp_mobilenet_v3_large": "lraspp",
}


def is_segmenter(model: str) -> bool:
    """True for `fcn`, `lraspp_mobilenet_v2`, ... (an architecture, optionally _backbone)."""
    name = str(model).strip().lower()
    return name.split("_", 1)[0] in SEGMENTATION_ARCHITECTURES
