"""GANs described by layer specs: a generator from noise (latent_dim,) to images (3, S, S) and a
discriminator from images to one logit, each a list of layers of `cnnkit.models.layers` (the
same parser and shape checks as a classifier's layers).

Written as `"G: dense:4096,reshape:256:4:4,... | D: conv2d:64:4:stride=2,...,dense:1"` or as a
YAML file with `generator:` and `discriminator:` lists. The shapes are checked once, where the
spec enters, and a spec that does not fit is refused in one line.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from cnnkit.errors import CnnkitError
from cnnkit.models.layers import build_sequence, parse_layers
from cnnkit.tasks.generate.names import split_roles

EXAMPLE = "G: dense:2048,reshape:128:4:4,...,tanh | D: conv2d:64:4:stride=2,...,flatten,dense:1"


def _from_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CnnkitError(f"model file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CnnkitError(f"cannot read model file {path}: {first}") from None
    if not isinstance(data, Mapping):
        raise CnnkitError(f"{path} must be a mapping with 'generator:' and 'discriminator:' lists")
    unknown = sorted(set(map(str, data)) - {"generator", "discriminator"})
    if unknown:
        hint = "; a class-conditional GAN is dcgan_conditional" if "conditional" in unknown else ""
        raise CnnkitError(
            f"{path}: unknown key(s) {', '.join(unknown)} (valid: generator, discriminator){hint}"
        )
    return dict(data)


def parse_gan_layers(model: str) -> tuple[list[dict], list[dict]]:
    """The normalised (generator, discriminator) layer lists of "G: ... | D: ..." or of a YAML
    file with `generator:` and `discriminator:`; either missing is refused in one line."""
    text = str(model).strip()
    if text.lower().endswith((".yaml", ".yml")):
        parts: dict[str, Any] = _from_yaml(Path(text))
        where = f"{text}: "
    else:
        parts = split_roles(text)
        where = ""
    found = []
    for role in ("generator", "discriminator"):
        if not parts.get(role):
            raise CnnkitError(f"{where}a layer-spec GAN needs a {role} ({EXAMPLE})")
        try:
            found.append(parse_layers(parts[role]))
        except CnnkitError as e:
            raise CnnkitError(f"{where}{role}: {e}") from None
    return found[0], found[1]


class LayerGenerator(nn.Module):
    """Noise (B, latent_dim) -> images (B, 3, S, S) through the spec's layers."""

    def __init__(self, layers: list[dict], latent_dim: int, image_size: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.num_classes = 0
        wanted = (3, image_size, image_size)
        self.net, shape = _build("generator", layers, (latent_dim,))
        if shape != wanted:
            raise CnnkitError(
                f"the generator maps noise ({latent_dim},) to {shape}, not to images {wanted} "
                f"at --image-size {image_size}; end it with an RGB layer such as "
                f"conv_transpose2d:3:4:stride=2:padding=1,tanh"
            )

    def forward(self, noise: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(noise)  # (B, 3, S, S)


class LayerDiscriminator(nn.Module):
    """Images (B, 3, S, S) -> one logit each (B,) through the spec's layers."""

    def __init__(self, layers: list[dict], image_size: int, spectral_norm: bool) -> None:
        super().__init__()
        given = (3, image_size, image_size)
        self.net, shape = _build("discriminator", layers, given, _one_logit(layers))
        if math.prod(shape) != 1:
            raise CnnkitError(
                f"the discriminator maps images {given} to {shape}, not to one logit (1,) "
                f"each; end it with flatten,dense (one unit)"
            )
        if spectral_norm:  # as DCGAN's: every convolution and linear layer
            for module in self.net.modules():
                if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                    _spectral_norm(module)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(images).flatten()  # (B,)


def _one_logit(layers: list[dict]) -> Callable[[int, dict, str], None]:
    """A discriminator's last dense may leave out its units: it gets 1 (the logit)."""
    last = max((i for i, layer in enumerate(layers) if layer["type"] == "dense"), default=None)

    def fill(i: int, args: dict, where: str) -> None:
        if i == last and args["units"] is None:
            args["units"] = 1

    return fill


def _build(
    role: str,
    layers: list[dict],
    shape: tuple[int, ...],
    fill: Callable[[int, dict, str], None] | None = None,
) -> tuple[nn.Sequential, tuple[int, ...]]:
    try:
        return build_sequence(layers, shape, fill)
    except CnnkitError as e:
        raise CnnkitError(f"{role}: {e}") from None
