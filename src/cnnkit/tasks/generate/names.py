"""Which model names are GANs (kept light: the task registry asks it for every run)."""

from __future__ import annotations

GAN_MODELS = ("dcgan", "dcgan_conditional")


def is_gan(model: str) -> bool:
    """True for `dcgan` and `dcgan_conditional`."""
    return str(model).strip().lower() in GAN_MODELS
