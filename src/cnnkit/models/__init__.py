"""Models: the registry (simple_cnn, efficientnet_lite0, torchvision architectures, timm:NAME),
Keras-like layer specs, ModelSpec (stored in checkpoints), summaries, and transfer learning
(pretrained weights + a new head: TransferModel). Every model returns logits."""

# Importing the built-in model modules registers them (simple_cnn first, so it lists first).
from cnnkit.models import simple_cnn  # noqa: F401, I001 (registration order: listed first)
from cnnkit.models import fastnet  # noqa: F401, I001 (registers fastnet, fastnet_cpu)
from cnnkit.models import efficientnet_lite, timm_models, torchvision_models  # noqa: F401
from cnnkit.models.layers import LAYER_TYPES, build_layers, load_layers_file, parse_layers
from cnnkit.models.pretrained import (
    TRANSFER_OPTIONS,
    pretrained_classes,
    pretrained_preprocessing,
    spec_for_rebuild,
    weights_file_name,
)
from cnnkit.models.registry import (
    create_model,
    list_models,
    model_input_size,
    register_model,
    resolve_spec,
)
from cnnkit.models.spec import ModelSpec
from cnnkit.models.summary import ModelSummary, SummaryRow, summarize
from cnnkit.models.transfer import TransferModel

__all__ = [
    "LAYER_TYPES",
    "ModelSpec",
    "ModelSummary",
    "SummaryRow",
    "TRANSFER_OPTIONS",
    "TransferModel",
    "build_layers",
    "create_model",
    "list_models",
    "load_layers_file",
    "model_input_size",
    "parse_layers",
    "pretrained_classes",
    "pretrained_preprocessing",
    "register_model",
    "resolve_spec",
    "spec_for_rebuild",
    "summarize",
    "weights_file_name",
]
