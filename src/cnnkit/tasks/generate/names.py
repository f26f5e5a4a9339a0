"""Which model names are GANs (kept light: the task registry asks it for every run)."""

from __future__ import annotations

from pathlib import Path

import yaml

from cnnkit.errors import CnnkitError

GAN_MODELS = ("dcgan", "dcgan_conditional")
GAN_LAYERS = "gan_layers"  # GANSpec.name of a GAN built from layer specs
ROLES = {
    "g": "generator",
    "generator": "generator",
    "d": "discriminator",
    "discriminator": "discriminator",
}


def split_roles(model: str) -> dict[str, str]:
    """ "G: layers | D: layers" -> {"generator": layers, "discriminator": layers}; a part
    without a G:/D: prefix, or a role given twice, is refused in one line."""
    found: dict[str, str] = {}
    for part in str(model).split("|"):
        prefix, sep, layers = part.partition(":")
        role = ROLES.get(prefix.strip().lower())
        if not sep or role is None:
            raise CnnkitError(
                f"a layer-spec GAN is 'G: layers | D: layers'; '{part.strip():.40}' starts "
                f"with neither G: nor D:"
            )
        if role in found:
            raise CnnkitError(f"a layer-spec GAN has one {role}, not two")
        found[role] = layers.strip()
    return found


def _is_gan_file(model: str) -> bool:
    path = Path(model)
    if path.suffix.lower() not in (".yaml", ".yml") or not path.is_file():
        return False
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError, OSError):
        return False  # the classifier's reader says what is wrong with it
    return isinstance(data, dict) and bool({"generator", "discriminator"} & set(data))


def is_gan_layers(model: str) -> bool:
    """True for "G: ... | D: ..." (no other model name holds a "|" or starts with "G:" or
    "D:") and for a YAML file with `generator:` / `discriminator:`."""
    text = str(model).strip()
    if "|" in text or text.partition(":")[0].strip().lower() in ROLES:
        return True
    return _is_gan_file(text)


def is_gan(model: str) -> bool:
    """True for `dcgan`, `dcgan_conditional` and layer-spec GANs."""
    return str(model).strip().lower() in GAN_MODELS or is_gan_layers(model)
