"""How pixels become model input: the one preprocessing object stored in every checkpoint.

Images are held as uint8 (N, 3, H, W) tensors; ``Preprocessing.to_input`` turns a batch of them
into the float tensor a model expects (resize on the device if the stored size differs, scale to
[0, 1], normalise). Training, evaluation, prediction and export all go through it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

RESIZE_POLICIES = ("stretch", "crop", "pad")


@dataclass
class Preprocessing:
    """Input size, resize policy and normalisation of a model's input."""

    size: tuple[int, int] = (32, 32)  # (H, W) the model sees
    resize: str = "stretch"  # how a decoded image of another shape reaches `size`
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    interpolation: str = "bilinear"
    extra: dict = field(default_factory=dict)  # model-specific notes (e.g. crop_pct)

    def __post_init__(self) -> None:
        self.size = (int(self.size[0]), int(self.size[1]))
        self.mean = tuple(float(m) for m in self.mean)
        self.std = tuple(float(s) for s in self.std)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["size"] = list(self.size)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Preprocessing:
        return cls(**d)

    def to_input(self, images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """uint8 (N, 3, h, w) -> normalised float (N, 3, H, W) at ``self.size``, same device."""
        x = images.to(dtype=torch.float32).div_(255.0)
        if tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(
                x, size=self.size, mode=self.interpolation, antialias=True, align_corners=False
            )
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return ((x - mean) / std).to(dtype)
