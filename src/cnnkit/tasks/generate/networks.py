"""DCGAN (Radford, Metz, Chintala 2015): a generator of transposed convolutions with BatchNorm
and ReLU, a discriminator of strided convolutions with BatchNorm and LeakyReLU(0.2), weights
drawn from N(0, 0.02). The class-conditional variant feeds the generator a one-hot class beside
the noise (Mirza and Osindero 2014) and gives the discriminator a projection term (Miyato and
Koyama 2018). Spectral normalisation (Miyato et al. 2018) of the discriminator replaces its
BatchNorm.

Both networks live in one `GAN` module, so the state dict, the EMA and the checkpoint stay
single; `GANSpec` rebuilds it without the training code. A GAN of layer specs
(`layer_networks`) lives in the same module, its layers recorded in the spec.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from cnnkit.errors import CnnkitError
from cnnkit.tasks.generate.layer_networks import (
    LayerDiscriminator,
    LayerGenerator,
    parse_gan_layers,
)
from cnnkit.tasks.generate.names import GAN_LAYERS, is_gan_layers

IMAGE_SIZES = (8, 16, 32, 64, 128)


@dataclass(frozen=True)
class GANSpec:
    """Enough to rebuild a GAN: its architecture name and sizes, and a layer-spec GAN's layers
    (stored in the checkpoint)."""

    name: str = "dcgan"  # dcgan | dcgan_conditional | gan_layers
    image_size: int = 32
    latent_dim: int = 100
    width: int = 64  # ngf = ndf: the channels at the largest feature map (DCGAN)
    num_classes: int = 0  # > 0: class-conditional
    spectral_norm: bool = False
    generator: list[dict] | None = None  # gan_layers: normalised layer lists
    discriminator: list[dict] | None = None

    def __post_init__(self) -> None:
        if self.layered:
            if self.num_classes:
                raise CnnkitError("a layer-spec GAN is unconditional; use dcgan_conditional")
            if self.image_size < 4:
                raise CnnkitError(f"a GAN makes images of 4 px or more, not {self.image_size}")
        elif self.image_size not in IMAGE_SIZES:
            sizes = ", ".join(map(str, IMAGE_SIZES))
            raise CnnkitError(f"a DCGAN makes square images of {sizes} px, not {self.image_size}")

    @property
    def conditional(self) -> bool:
        return self.num_classes > 0

    @property
    def layered(self) -> bool:
        """Built from layer specs (`generator` / `discriminator`), not DCGAN's recipe."""
        return self.name == GAN_LAYERS

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> GANSpec:
        return cls(**values)


def _stages(image_size: int) -> int:
    """Stride-2 layers between the 4x4 map and the image, the image's own layer included."""
    return int(math.log2(image_size)) - 2


class DCGANGenerator(nn.Module):
    """Noise (B, latent_dim) [+ class] -> images (B, 3, S, S) in [-1, 1]."""

    def __init__(self, spec: GANSpec) -> None:
        super().__init__()
        self.latent_dim = spec.latent_dim
        self.num_classes = spec.num_classes
        stages = _stages(spec.image_size)
        channels = spec.width * 2 ** (stages - 1)  # at 4x4; halves with every doubling
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(spec.latent_dim + spec.num_classes, channels, 4, 1, 0, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(True),
        ]
        for _ in range(stages - 1):  # (B, C, s, s) -> (B, C/2, 2s, 2s)
            layers += [
                nn.ConvTranspose2d(channels, channels // 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(channels // 2),
                nn.ReLU(True),
            ]
            channels //= 2
        layers += [nn.ConvTranspose2d(channels, 3, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, noise: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        inputs = noise
        if self.num_classes:
            onehot = nn.functional.one_hot(labels, self.num_classes).to(noise.dtype)
            inputs = torch.cat([noise, onehot], dim=1)
        return self.net(inputs[:, :, None, None])  # (B, 3, S, S)


class DCGANDiscriminator(nn.Module):
    """Images (B, 3, S, S) [+ class] -> one logit each (B,): real (high) or generated."""

    def __init__(self, spec: GANSpec) -> None:
        super().__init__()
        norm = _spectral_norm if spec.spectral_norm else (lambda m: m)
        stages = _stages(spec.image_size)
        channels = spec.width
        layers: list[nn.Module] = [norm(nn.Conv2d(3, channels, 4, 2, 1)), nn.LeakyReLU(0.2, True)]
        for _ in range(stages - 1):  # (B, C, s, s) -> (B, 2C, s/2, s/2)
            layers.append(norm(nn.Conv2d(channels, channels * 2, 4, 2, 1, bias=False)))
            if not spec.spectral_norm:
                layers.append(nn.BatchNorm2d(channels * 2))
            layers.append(nn.LeakyReLU(0.2, True))
            channels *= 2
        self.features = nn.Sequential(*layers)  # (B, C, 4, 4)
        self.out = norm(nn.Conv2d(channels, 1, 4, 1, 0))
        # projection discriminator: + <embed(class), features>
        self.embed = nn.Embedding(spec.num_classes, channels * 16) if spec.num_classes else None

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = self.features(images)
        logits = self.out(h).flatten()  # (B,)
        if self.embed is not None:
            logits = logits + (self.embed(labels) * h.flatten(1)).sum(dim=1)
        return logits


class GAN(nn.Module):
    """The generator and the discriminator as one module; calling it generates."""

    def __init__(self, spec: GANSpec) -> None:
        super().__init__()
        self.spec = spec
        self.generator: nn.Module
        self.discriminator: nn.Module
        if spec.layered:
            size = spec.image_size
            self.generator = LayerGenerator(spec.generator or [], spec.latent_dim, size)
            self.discriminator = LayerDiscriminator(
                spec.discriminator or [], size, spec.spectral_norm
            )
        else:
            self.generator = DCGANGenerator(spec)
            self.discriminator = DCGANDiscriminator(spec)
        self.apply(dcgan_init)

    def forward(self, noise: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.generator(noise, labels)


@torch.no_grad()
def dcgan_init(module: nn.Module) -> None:
    """DCGAN's initialisation: convolutions N(0, 0.02), BatchNorm scales N(1, 0.02), shifts 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        weight = getattr(module, "parametrizations", None)
        target = weight.weight.original if weight is not None else module.weight
        nn.init.normal_(target, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, 0.0, 0.02)


def gan_spec(cfg: Any, image_size: int, num_classes: int) -> GANSpec:
    """The spec a training config asks for (dcgan_conditional takes the data's classes)."""
    return make_gan_spec(
        cfg.model, image_size, num_classes, int(cfg.latent_dim or 100), bool(cfg.spectral_norm)
    )


def make_gan_spec(
    model: str,
    image_size: int,
    num_classes: int = 0,
    latent_dim: int = 100,
    spectral_norm: bool = False,
) -> GANSpec:
    """The spec of a GAN name or "G: ... | D: ..." / YAML layers; a layer-spec GAN's shapes are
    checked here, where it enters."""
    if is_gan_layers(model):
        generator, discriminator = parse_gan_layers(model)
        spec = GANSpec(
            name=GAN_LAYERS,
            image_size=image_size,
            latent_dim=latent_dim,
            width=0,
            spectral_norm=spectral_norm,
            generator=generator,
            discriminator=discriminator,
        )
        GAN(spec)  # builds both on the CPU: a spec whose shapes do not fit is refused now
        return spec
    name = str(model).strip().lower()
    return GANSpec(
        name=name,
        image_size=image_size,
        latent_dim=latent_dim,
        num_classes=num_classes if name == "dcgan_conditional" else 0,
        spectral_norm=spectral_norm,
    )


def list_gans() -> list[tuple[str, str]]:
    """(name, description) of every GAN, for `cnnkit models --task generate`."""
    return [
        ("dcgan", "DCGAN: transposed-convolution generator, strided-convolution discriminator"),
        ("dcgan_conditional", "DCGAN given a class (one-hot noise input, projection D)"),
        (
            '"G: LAYERS | D: LAYERS"',
            "your own generator (noise -> 3 x S x S) and discriminator (-> one logit) as layer "
            "specs, or a YAML file with generator: and discriminator: lists",
        ),
    ]
