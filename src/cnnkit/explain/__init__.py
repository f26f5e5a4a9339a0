"""See why a classifier decides: class activation maps, first-layer filters, feature maps."""

from cnnkit.explain.cam import METHODS, Explanation, explain
from cnnkit.explain.layers import conv_layer_names, find_target_layer

__all__ = ["METHODS", "Explanation", "conv_layer_names", "explain", "find_target_layer"]
