"""EfficientNet-Lite0's names and timm's pretrained configuration of it (size, normalisation).

The bottom of the Lite0 stack: ``pretrained`` (preprocessing, weight file names) and
``efficientnet_lite`` (weights, builder, registration) both read it, and it imports neither.
"""

from __future__ import annotations

from cnnkit.data.preprocess import Preprocessing

ARCH = "tf_efficientnet_lite0"
NAME = "efficientnet_lite0"
IMAGENET_CLASSES = 1000


def lite0_pretrained_cfg() -> dict:
    """timm's pretrained configuration of ``tf_efficientnet_lite0`` as a dict."""
    import timm

    cfg = None
    try:
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(ARCH)
    except ImportError:  # older timm: read it off a (weightless) model
        pass
    if cfg is None:
        cfg = timm.create_model(ARCH, pretrained=False).pretrained_cfg
    return cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)


def efficientnet_lite0_preprocessing() -> Preprocessing:
    """Input size, crop policy, interpolation and normalisation from timm's pretrained config."""
    cfg = lite0_pretrained_cfg()
    _, height, width = cfg["input_size"]
    return Preprocessing(
        size=(height, width),
        resize="crop",
        mean=tuple(cfg["mean"]),
        std=tuple(cfg["std"]),
        interpolation=cfg.get("interpolation") or "bilinear",
        extra={
            "crop_pct": float(cfg.get("crop_pct") or 1.0),
            "crop_mode": cfg.get("crop_mode") or "center",
            "source": f"timm:{ARCH}",
        },
    )
