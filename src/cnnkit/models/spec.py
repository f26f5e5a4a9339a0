"""ModelSpec: what a checkpoint stores to rebuild a model without the code that trained it."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from cnnkit.errors import CnnkitError

LAYERS = "layers"  # ModelSpec.name of a layer-spec model (its layers are in ModelSpec.layers)


@dataclass
class ModelSpec:
    """A registry name (or "layers" / "timm:NAME"), a normalised layer list, builder options."""

    name: str
    layers: list[dict] | None = None
    options: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Plain dict/list/str/number values only, so ``torch.load(weights_only=True)`` reads it."""
        return {
            "name": self.name,
            "layers": copy.deepcopy(self.layers),
            "options": copy.deepcopy(self.options),
        }

    @classmethod
    def from_dict(cls, d: dict) -> ModelSpec:
        if not isinstance(d, dict) or not isinstance(d.get("name"), str):
            raise CnnkitError(f"not a model spec (needs a 'name'): {d!r:.200}")
        unknown = set(d) - {"name", "layers", "options"}
        if unknown:
            raise CnnkitError(f"unknown model spec keys: {', '.join(sorted(unknown))}")
        layers = d.get("layers")
        return cls(
            name=d["name"],
            layers=copy.deepcopy(list(layers)) if layers is not None else None,
            options=copy.deepcopy(dict(d.get("options") or {})),
        )
