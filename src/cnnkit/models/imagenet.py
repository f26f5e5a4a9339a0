"""The 1000 ImageNet-1k class names, from torchvision's weight metadata (no download)."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def _classes() -> tuple[str, ...]:
    from torchvision.models import ResNet50_Weights

    names = tuple(ResNet50_Weights.IMAGENET1K_V2.meta["categories"])
    if len(names) != 1000 or names[285] != "Egyptian cat" or names[967] != "espresso":
        raise RuntimeError("torchvision's ImageNet class list is not in the standard order")
    return names


def imagenet_classes() -> list[str]:
    """The ImageNet-1k class names in the standard index order (285 'Egyptian cat')."""
    return list(_classes())
