"""See why a model decides: class activation maps for classifiers, detectors and segmenters;
a classifier's first-layer filters and feature maps."""

from cnnkit.explain.cam import METHODS, Explanation, explain
from cnnkit.explain.detection import DetectionExplanation
from cnnkit.explain.layers import conv_layer_names, find_target_layer
from cnnkit.explain.segmentation import SegmentationExplanation

__all__ = [
    "METHODS",
    "DetectionExplanation",
    "Explanation",
    "SegmentationExplanation",
    "conv_layer_names",
    "explain",
    "find_target_layer",
]
