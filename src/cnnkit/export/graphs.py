"""Each task's network as the graph an exported file holds, and the input it takes.

- classify: the model's logits (B, classes). Its input is the normalised float image the
  checkpoint's preprocessing makes, or with ``bake=True`` the uint8 pixels (B, 3, H, W), scaled
  and normalised inside the graph.
- embed: the unit embeddings (B, dim) of an embedding model, its input as a classifier's.
- segment: logits (B, classes, S, S) for uint8 letterboxed (B, 3, S, S) images; the network
  normalises its input itself, so the graph always takes pixels.
- detect: the dense form of ``cnnkit.export.dense_detect`` (boxes and scores of every anchor)
  for uint8 letterboxed images; NMS runs outside.

Resizing to the model's size (stretch, crop or letterbox, by the checkpoint's policy) stays
outside the graph in every case: it depends on each image's own size.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from cnnkit.errors import CnnkitError
from cnnkit.export.dense_detect import DenseDetector


class ClassifierGraph(nn.Module):
    """A classifier's logits; with ``bake`` its input is uint8 pixels, normalised inside."""

    def __init__(self, model: nn.Module, mean: Any, std: Any, bake: bool) -> None:
        super().__init__()
        self.model = model
        self.bake = bake
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images
        if self.bake:
            x = (images.float() / 255.0 - self.mean) / self.std
        return self.model(x)


@dataclass
class Graph:
    """What the exporter traces, with an example input and what the metadata says of it."""

    module: nn.Module
    example: torch.Tensor
    outputs: list[str]
    pixels: bool  # True: uint8 pixels in; False: the normalised float image
    extra: dict[str, Any] = field(default_factory=dict)  # task-specific metadata


def task_graph(predictor: Any, bake: bool = False) -> Graph:
    """The graph of a loaded predictor (Classifier, Detector or Segmenter), on the CPU in fp32
    and eval mode; the predictor itself is left as it was."""
    if predictor.task == "generate":
        raise CnnkitError("cnnkit export does not export GANs yet; `cnnkit generate` makes images")
    net = copy.deepcopy(predictor.model).float().cpu().eval()
    net = net.to(memory_format=torch.contiguous_format)
    height, width = predictor.preprocessing.size
    pixels = torch.randint(0, 256, (2, 3, height, width), dtype=torch.uint8)
    if predictor.task in ("classify", "embed"):
        prep = predictor.preprocessing
        module = ClassifierGraph(net, prep.mean, prep.std, bake).eval()
        example = pixels if bake else prep.to_input(pixels)
        outputs = ["logits"] if predictor.task == "classify" else ["embeddings"]
        return Graph(module, example, outputs, bake)
    if predictor.task == "segment":
        return Graph(net, pixels, ["logits"], True)
    if predictor.task == "detect":
        if predictor.mode != "letterbox":
            raise CnnkitError(
                f"a detector trained with --resize {predictor.mode} takes images of varying"
                f" shape; export needs the fixed square of --resize letterbox"
            )
        dense = DenseDetector(net).eval()
        return Graph(dense, pixels, ["boxes", "scores"], True, {"dense": dense.layout()})
    raise CnnkitError(f"cnnkit export does not take {predictor.task} models")
