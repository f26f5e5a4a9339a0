"""Models: the registry (simple_cnn, torchvision architectures, timm:NAME), Keras-like layer
specs, ModelSpec (stored in checkpoints) and summaries. Every model returns logits."""

# Importing the built-in model modules registers them (simple_cnn first, so it lists first).
from cnnkit.models import simple_cnn, timm_models, torchvision_models  # noqa: F401
from cnnkit.models.layers import LAYER_TYPES, build_layers, load_layers_file, parse_layers
from cnnkit.models.registry import (
    create_model,
    list_models,
    model_input_size,
    register_model,
    resolve_spec,
)
from cnnkit.models.spec import ModelSpec
from cnnkit.models.summary import ModelSummary, SummaryRow, summarize

__all__ = [
    "LAYER_TYPES",
    "ModelSpec",
    "ModelSummary",
    "SummaryRow",
    "build_layers",
    "create_model",
    "list_models",
    "load_layers_file",
    "model_input_size",
    "parse_layers",
    "register_model",
    "resolve_spec",
    "summarize",
]
