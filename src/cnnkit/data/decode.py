"""decode_image(): any file, bytes, PIL image or array -> RGB uint8 (H, W, 3), or a clear error.

Every image that enters cnnkit passes through here, so training, evaluation and prediction see
the same pixels: EXIF orientation applied, alpha composited on white, 16-bit scaled by its type's
range, CMYK/palette/grayscale converted to RGB, and an optional resize by a named policy. Files
that cannot be decoded raise ``ImageDecodeError`` whose message is a short reason, so the
up-front scan can list them instead of crashing mid-epoch.
"""

from __future__ import annotations

import io
import os
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from cnnkit.data.pixels import (
    array_to_rgb,
    composite_on_white,
    float_file_to_uint8,
    gray_to_rgb,
    int_file_to_uint8,
    is_tensor,
    tensor_to_array,
)
from cnnkit.data.preprocess import RESIZE_POLICIES
from cnnkit.errors import ImageDecodeError, did_you_mean

DEFAULT_MAX_PIXELS = 89_478_485  # PIL's own default Image.MAX_IMAGE_PIXELS (~ 0.25 GiB RGBA)
IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}
)

_MAGIC = (
    (b"\x89PNG", "PNG"),
    (b"\xff\xd8", "JPEG"),
    (b"GIF8", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_16BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N"}


class NotAnImage(ImageDecodeError):
    """Bytes no image decoder recognises (or an empty file): a server's 415."""


class TooManyPixels(ImageDecodeError):
    """An image whose header claims more pixels than allowed (a decompression bomb)."""


# the formats a server accepts (decode_image(formats=...)); PIL's other plugins stay closed
WEB_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP")


def check_resize_policy(resize: str) -> str:
    """Return ``resize`` if it is a known policy, else raise a did-you-mean error."""
    if resize not in RESIZE_POLICIES:
        raise did_you_mean("resize policy", str(resize), RESIZE_POLICIES)
    return resize


# PIL keeps LOAD_TRUNCATED_IMAGES and MAX_IMAGE_PIXELS as module globals that other code may set.
# While any decode runs we force strict loading and switch off PIL's own bomb check (we apply our
# own, per call, from the header); the previous values come back when the last decode ends.
_state_lock = threading.Lock()
_active = 0
_saved: tuple[Any, Any] = (False, DEFAULT_MAX_PIXELS)


@contextmanager
def _strict_pil() -> Iterator[None]:
    global _active, _saved
    with _state_lock:
        if _active == 0:
            _saved = (ImageFile.LOAD_TRUNCATED_IMAGES, Image.MAX_IMAGE_PIXELS)
            ImageFile.LOAD_TRUNCATED_IMAGES = False
            Image.MAX_IMAGE_PIXELS = None
        _active += 1
    try:
        yield
    finally:
        with _state_lock:
            _active -= 1
            if _active == 0:
                ImageFile.LOAD_TRUNCATED_IMAGES, Image.MAX_IMAGE_PIXELS = _saved


def sniff_format(head: bytes) -> str | None:
    """The format of an image's first bytes (PNG, JPEG, GIF, BMP, TIFF, WEBP), or None."""
    name = _format_of(head)
    return None if name == "image" else name


# a BMP's file header (14 bytes) is followed by its DIB header's size: one of these
_DIB_SIZES = (12, 16, 40, 52, 56, 64, 108, 124)


def _format_of(head: bytes) -> str:
    for magic, name in _MAGIC:
        if head.startswith(magic):
            if name == "BMP" and int.from_bytes(head[14:18], "little") not in _DIB_SIZES:
                continue  # "BM..." text, not a bitmap (a BMP cut before byte 18 is no image)
            return name
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return "image"


_POSTSCRIPT = (b"%!PS", b"\xc5\xd0\xd3\xc6")  # EPS: PIL would hand it to Ghostscript
# PIL warns (UserWarning) of a broken EXIF block, which is not worth a word to the user
warnings.filterwarnings("ignore", message=r"(?i).*exif", category=UserWarning, module=r"PIL\.")


def _open_formats() -> tuple[str, ...]:
    """Every format PIL can open but EPS (whose plugin runs Ghostscript on the file); read at
    each call, so plugins registered later (pillow-heif's, ...) are used."""
    Image.init()
    return tuple(f for f in Image.OPEN if f != "EPS")


def _open(source: Any) -> tuple[Image.Image, str]:
    """Open lazily (header only) and return the image and a format name for messages."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise NotAnImage("zero-byte file")
        fp: Any = io.BytesIO(data)
        head = data[:32]
    elif isinstance(source, (str, os.PathLike)):
        if "\0" in os.fsdecode(source):
            raise ImageDecodeError("invalid path (it holds a NUL character)")
        try:
            if os.path.getsize(source) == 0:
                raise NotAnImage("zero-byte file")
            with open(source, "rb") as f:
                head = f.read(32)
        except FileNotFoundError:
            raise ImageDecodeError("file not found") from None
        except IsADirectoryError:
            raise ImageDecodeError("a folder, not a file") from None
        except PermissionError:
            raise ImageDecodeError("permission denied") from None
        except OSError as e:  # a symbolic link loop, an I/O error, a name too long, ...
            raise ImageDecodeError(f"cannot be read ({e.strerror or e})") from None
        fp = source
    elif hasattr(source, "read"):
        return _open(source.read())
    else:
        raise TypeError(f"cannot decode an image from {type(source).__name__}")
    fmt = _format_of(head)
    if head.startswith(_POSTSCRIPT):
        raise NotAnImage("unsupported format EPS/PostScript (not decoded: convert it to PNG)")
    try:
        im = Image.open(fp, formats=_open_formats())
    except UnidentifiedImageError:
        if fmt == "image":
            raise NotAnImage("not an image") from None
        truncated = _missing_end_marker(fmt, source if isinstance(fp, io.BytesIO) else fp)
        raise ImageDecodeError(f"{'truncated' if truncated else 'corrupt'} {fmt}") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise TooManyPixels(f"image exceeds PIL's pixel limit ({e})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageDecodeError(_reason(fmt, e)) from None
    return im, (im.format or fmt)


_END_MARKERS = {"PNG": b"IEND\xaeB`\x82", "JPEG": b"\xff\xd9"}


def _missing_end_marker(fmt: str, source: Any) -> bool:
    """Whether a PNG/JPEG lacks its end marker (a cut-off file rather than a corrupt one)."""
    marker = _END_MARKERS.get(fmt)
    if marker is None:
        return False
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 64))
            tail = f.read()
    else:
        tail = bytes(source)[-64:]
    return marker not in tail


def _reason(fmt: str, error: BaseException) -> str:
    text = str(error)
    if "truncat" in text.lower() or isinstance(error, EOFError):
        return f"truncated {fmt}"
    return f"corrupt {fmt} ({text})" if text else f"corrupt {fmt}"


def _check_pixels(width: int, height: int, max_pixels: int | None) -> None:
    if max_pixels is not None and width * height > max_pixels:
        raise TooManyPixels(
            f"image of {width}x{height} pixels exceeds the limit of {max_pixels:,} pixels"
        )


def _orientation_swaps(im: Image.Image) -> bool:
    """Whether the EXIF orientation (5-8) rotates by 90 degrees, read without decoding pixels."""
    try:
        if im.format == "PNG":  # PNG's getexif() would decode the pixels; use a parsed chunk
            raw = im.info.get("exif")
            if not raw:
                return False
            exif = Image.Exif()
            exif.load(raw)
        else:
            exif = im.getexif()
        return exif.get(0x0112, 1) in (5, 6, 7, 8)
    except Exception:  # a broken EXIF block is not worth rejecting the image for
        return False


def read_size(
    source: str | os.PathLike | bytes, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> tuple[int, int]:
    """(H, W) of an image file as decode_image would return it, from the header only."""
    with _strict_pil():
        im, _ = _open(source)
        with im:
            w, h = im.size
            _check_pixels(w, h, max_pixels)
            return (w, h) if _orientation_swaps(im) else (h, w)


def _pil_to_rgb(im: Image.Image, fmt: str) -> np.ndarray:
    """A loaded PIL image of any mode (from a ``fmt`` file) -> RGB uint8 array."""
    mode = im.mode
    if mode == "RGB" and "transparency" not in im.info:
        return np.asarray(im, dtype=np.uint8)
    if mode in _16BIT_MODES:
        return gray_to_rgb((np.asarray(im).astype(np.int64).clip(0, 65535) >> 8).astype(np.uint8))
    if mode in ("I", "I;32", "I;32L", "I;32B"):  # 16-bit PNG / PGM in PIL; a 32-bit TIFF
        return gray_to_rgb(int_file_to_uint8(np.asarray(im), sixteen_bit=fmt != "TIFF"))
    if mode == "F":
        return gray_to_rgb(float_file_to_uint8(np.asarray(im)))
    if mode in _ALPHA_MODES or "transparency" in im.info:
        return composite_on_white(np.asarray(im.convert("RGBA")))
    try:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (ValueError, OSError) as e:
        raise ImageDecodeError(f"unsupported image mode {mode} ({e})") from None


def resize_image(im: Image.Image, size: tuple[int, int], resize: str = "stretch") -> Image.Image:
    """Resize an RGB PIL image to (H, W) by policy: stretch, crop (center) or pad (letterbox)."""
    h, w = size
    if im.size == (w, h):
        return im
    if resize == "stretch":
        return im.resize((w, h), Image.Resampling.BILINEAR, reducing_gap=3.0)
    if resize == "crop":
        return ImageOps.fit(im, (w, h), Image.Resampling.BILINEAR, centering=(0.5, 0.5))
    if resize == "pad":
        return ImageOps.pad(im, (w, h), Image.Resampling.BILINEAR, color=(0, 0, 0))
    raise did_you_mean("resize policy", str(resize), RESIZE_POLICIES)


def decode_image(
    source: Any,
    size: tuple[int, int] | None = None,
    resize: str = "stretch",
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Decode a path, bytes, file object, PIL image, array (H, W[, C]) or tensor (C, H, W as
    torchvision's, or H, W[, C]) to RGB uint8 (H, W, 3).

    ``size`` is (H, W); when given and different, the image is resized by ``resize``. Images over
    ``max_pixels`` are refused from their header, before any pixel is decoded.
    """
    if size is not None:
        check_resize_policy(resize)
        size = (int(size[0]), int(size[1]))
    if is_tensor(source):
        source = tensor_to_array(source)
    if isinstance(source, np.ndarray):
        _check_pixels(source.shape[1] if source.ndim > 1 else 1, source.shape[0], max_pixels)
        rgb = array_to_rgb(source)
    elif isinstance(source, Image.Image):
        if source.width == 0 or source.height == 0:
            raise ImageDecodeError(f"empty image ({source.width}x{source.height} pixels)")
        _check_pixels(*source.size, max_pixels)
        with _strict_pil():
            rgb = _load_rgb(source, source.format or "image")
    else:
        rgb = _decode_encoded(source, max_pixels)
    if size is None or rgb.shape[:2] == size:
        return rgb
    out = resize_image(Image.fromarray(rgb, "RGB"), size, resize)
    return np.asarray(out, dtype=np.uint8)


def _decode_encoded(source: Any, max_pixels: int | None) -> np.ndarray:
    if hasattr(source, "read"):
        source = source.read()
    with _strict_pil():
        im, fmt = _open(source)
        with im:
            _check_pixels(*im.size, max_pixels)
            if fmt == "JPEG":
                _check_jpeg_length(source, *im.size)
            return _load_rgb(im, fmt)


# start-of-frame markers (0xFFC0-0xFFCF but DHT C4, JPG C8 and DAC CC); C9-CB and CD-CF are
# arithmetic-coded frames, which can code a plain block in under a bit
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_ARITHMETIC_SOF = frozenset({0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_HEADER_BYTES = 1 << 20  # marker segments read before the frame header: EXIF, ICC, ...


def _frame_marker(head: bytes) -> int | None:
    """The start-of-frame marker of a JPEG's header (walking its marker segments up to the
    first scan, skipping stray bytes between segments as libjpeg does), or None when the walk
    does not reach one."""
    pos = 2  # after SOI
    while pos + 4 <= len(head):
        marker = head[pos + 1]
        if head[pos] != 0xFF or marker in (0x00, 0xFF):  # a stray or fill byte
            pos += 1
            continue
        if marker in _SOF_MARKERS:
            return marker
        if marker == 0xDA:  # start of scan: no frame header before it
            return None
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            pos += 2
            continue
        pos += 2 + int.from_bytes(head[pos + 2 : pos + 4], "big")
    return None


def _check_jpeg_length(source: Any, width: int, height: int) -> None:
    """Refuse a JPEG too short to hold the pixels its header claims, before decoding it:
    libjpeg would fill what is missing with grey, at the full size's cost. Huffman coding
    spends at least one bit on every 8x8 block, and the most finely sampled component has a
    block for every 8x8 pixels, so a frame holds at least a bit per 64 pixels; the bound used
    is a bit per 16x16 pixels, 4x below that (a plain white JPEG spends 2-3 bits per 8x8
    pixels). Arithmetic-coded frames (rare) can code a plain block in under a bit and are not
    checked; --max-pixels still bounds them."""
    path = isinstance(source, (str, os.PathLike))
    length = os.path.getsize(source) if path else len(source)
    if length * 8 >= -(-width // 16) * -(-height // 16):
        return  # long enough: the header is only read for a file that is not
    if path:
        with open(source, "rb") as f:
            head = f.read(_HEADER_BYTES)
    else:
        head = bytes(source[:_HEADER_BYTES])
    marker = _frame_marker(head)
    if marker is not None and marker not in _ARITHMETIC_SOF:
        if _missing_end_marker("JPEG", source):
            raise ImageDecodeError("truncated JPEG")
        raise ImageDecodeError(
            f"corrupt JPEG ({length:,} bytes cannot hold the {width}x{height} pixels its "
            "header claims)"
        )


def _load_rgb(im: Image.Image, fmt: str) -> np.ndarray:
    """Decode the pixels (inside _strict_pil), apply EXIF orientation, convert to RGB."""
    try:
        im.load()
        return _pil_to_rgb(ImageOps.exif_transpose(im), fmt)
    except (ImageDecodeError, MemoryError):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise TooManyPixels(f"image exceeds PIL's pixel limit ({e})") from None
    except Exception as e:  # PIL raises many types on crafted/corrupt files
        raise ImageDecodeError(_reason(fmt, e)) from None
