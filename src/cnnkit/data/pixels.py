"""Pixel arrays -> RGB uint8 (H, W, 3): what decode_image does once a file is decoded, or when it
is handed an array or a tensor.

The rules: uint8 as it is; 16-bit scaled by its type's range; a float image's values in [0, 1]
(a resize's overshoot of up to FLOAT_SLACK clipped); alpha composited on white; grey repeated
into three channels. A float or 32-bit integer TIFF *file* has no type range to go by: its
values are read by the range they lie in (0-1, 0-255 or 0-65535), never clipped to white; so
are the float arrays of an .npz (image_stack_to_uint8, over the whole stack).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cnnkit.errors import ImageDecodeError

FLOAT_SLACK = 0.05  # how far outside [0, 1] a float image may stray (then clipped)


def composite_on_white(rgba: np.ndarray) -> np.ndarray:
    alpha = rgba[..., 3:4].astype(np.uint16)
    rgb = rgba[..., :3].astype(np.uint16)
    return ((rgb * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)


def gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[..., None], 3, axis=2)


def unit_float_to_uint8(a: np.ndarray) -> np.ndarray:
    """Float values in [0, 1] (clipped) -> uint8."""
    return (np.clip(a.astype(np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _value_range(a: np.ndarray) -> tuple[float, float]:
    low, high = float(np.min(a)), float(np.max(a))
    if not (np.isfinite(low) and np.isfinite(high)):
        raise ImageDecodeError("pixel values that are not numbers (NaN or infinite)")
    return low, high


UNIT_FLOAT_MAX = 2.0  # a float file's values up to this are a 0-1 image (brighter: clipped)


def float_file_to_uint8(a: np.ndarray) -> np.ndarray:
    """A float image file's grey values (PIL mode F) -> uint8, by the range they lie in: up to
    UNIT_FLOAT_MAX a 0-1 image (what overshoots is clipped), else 0-255, else 0-65535; other
    values are refused rather than clipped. Pixels that are no number (a GIS file's 'no data')
    are black; a file of nothing else is refused."""
    a = a.astype(np.float32)
    finite = np.isfinite(a)
    if not finite.any():
        raise ImageDecodeError("pixel values that are not numbers (NaN or infinite)")
    a = np.where(finite, a, 0.0)
    return unit_float_to_uint8(a / float_range_top(float(a.min()), float(a.max())))


def float_range_top(low: float, high: float) -> float:
    """The top of the image range float values from ``low`` to ``high`` lie in (1, 255 or
    65535, as float_file_to_uint8 reads them), or ImageDecodeError when they lie in none."""
    for top in (1.0, 255.0, 65535.0):
        limit = UNIT_FLOAT_MAX if top == 1.0 else (1.0 + FLOAT_SLACK) * top
        if low >= -FLOAT_SLACK * top and high <= limit:
            return top
    raise ImageDecodeError(
        f"float pixel values {low:.6g}..{high:.6g} lie in no image range (0-1, 0-255 or 0-65535)"
    )


STACK_CHUNK = 1024  # images converted at a time: a float64 stack is not copied whole


def _is_uint16(dtype: np.dtype) -> bool:
    """16-bit unsigned in either byte order (FITS and other big-endian sources give >u2)."""
    return dtype.kind == "u" and dtype.itemsize == 2


def image_stack_to_uint8(images: np.ndarray) -> np.ndarray:
    """A stack of images (N, ...) of uint8, uint16 or float -> uint8 by the file rules: uint8
    as it is, 16-bit scaled by its type's range, floats by the range the whole stack's values
    lie in (so every image is scaled alike) with no-number pixels black and a stack of nothing
    else refused; other types are refused."""
    if images.dtype == np.uint8:
        return images
    images = images.reshape(1) if images.ndim == 0 else images  # (its shape is refused later)
    if images.size == 0 and images.dtype.kind in "uif":  # nothing to scale
        return images.astype(np.uint8)
    if _is_uint16(images.dtype):
        return (images >> 8).astype(np.uint8)
    if not np.issubdtype(images.dtype, np.floating):
        raise ImageDecodeError(f"pixel type {images.dtype} (use uint8, uint16 or float)")
    low, high = np.inf, -np.inf
    for start in range(0, len(images), STACK_CHUNK):
        part = images[start : start + STACK_CHUNK]
        finite = part[np.isfinite(part)]
        if finite.size:
            low, high = min(low, float(finite.min())), max(high, float(finite.max()))
    if low > high:
        raise ImageDecodeError("pixel values that are not numbers (NaN or infinite)")
    top = float_range_top(low, high)
    out = np.empty(images.shape, np.uint8)
    for start in range(0, len(images), STACK_CHUNK):
        part = images[start : start + STACK_CHUNK].astype(np.float32)
        out[start : start + STACK_CHUNK] = unit_float_to_uint8(
            np.where(np.isfinite(part), part, 0.0) / top
        )
    return out


def int_file_to_uint8(a: np.ndarray, sixteen_bit: bool) -> np.ndarray:
    """A 32-bit integer image file's grey values (PIL mode I) -> uint8. ``sixteen_bit``: the
    format stores 16 bits (a PNG in older Pillow); otherwise (TIFF) the values' range decides,
    0-255 or 0-65535, and others are refused."""
    a = a.astype(np.int64)
    if sixteen_bit:
        return (np.clip(a, 0, 65535) >> 8).astype(np.uint8)
    low, high = _value_range(a)
    if low >= 0 and high <= 255:
        return a.astype(np.uint8)
    if low >= 0 and high <= 65535:
        return (a >> 8).astype(np.uint8)
    raise ImageDecodeError(
        f"32-bit pixel values {low:.0f}..{high:.0f} lie in no image range (0-255 or 0-65535)"
    )


def is_tensor(source: Any) -> bool:
    return type(source).__module__.startswith("torch") and hasattr(source, "detach")


def tensor_to_array(t: Any) -> np.ndarray:
    """A torch tensor -> an (H, W[, C]) array: a 3-d tensor whose first size is 1, 3 or 4 is
    torchvision's (C, H, W) and moves to channels last (other 3-d tensors are (H, W, C)); a
    batch is refused (give a list of images)."""
    t = t.detach().cpu()
    if t.ndim == 4:
        raise ImageDecodeError(
            f"a batch tensor {tuple(t.shape)}: give one image (C, H, W) or a list of them"
        )
    if t.ndim == 3 and t.shape[0] in (1, 3, 4):
        t = t.permute(1, 2, 0)
    if t.is_floating_point():
        t = t.float()  # numpy has no bf16
    return t.contiguous().numpy()


def array_to_rgb(a: np.ndarray) -> np.ndarray:
    """(H, W), (H, W, 1), (H, W, 3) or (H, W, 4) of uint8, uint16, bool or float [0, 1]."""
    if a.ndim == 3 and a.shape[2] in (1, 3, 4):
        pass
    elif a.ndim == 2:
        a = a[..., None]
    else:
        raise ImageDecodeError(f"unsupported array shape {tuple(a.shape)} (need HxW or HxWxC)")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ImageDecodeError(f"empty image ({a.shape[1]}x{a.shape[0]} pixels)")
    if a.dtype == np.uint8:
        pass
    elif _is_uint16(a.dtype):
        a = (a >> 8).astype(np.uint8)
    elif a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    elif np.issubdtype(a.dtype, np.floating):
        low, high = float(np.min(a)), float(np.max(a))
        # a resize's overshoot is clipped; 0-255 values, or mean/std-normalised ones, are not
        # guessed at (NaN fails both comparisons)
        if not (low >= -FLOAT_SLACK and high <= 1.0 + FLOAT_SLACK):
            raise ImageDecodeError(
                f"a float image's values must lie in [0, 1], not {low:.6g}..{high:.6g} "
                "(divide 0-255 values by 255, or give uint8)"
            )
        a = unit_float_to_uint8(a)
    else:
        raise ImageDecodeError(
            f"unsupported array dtype {a.dtype} (use uint8, uint16 or float in [0, 1])"
        )
    if a.shape[2] == 1:
        return np.ascontiguousarray(np.repeat(a, 3, axis=2))
    if a.shape[2] == 4:
        return composite_on_white(a)
    return np.ascontiguousarray(a)
