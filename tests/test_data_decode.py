"""decode_image: every input kind and mode -> RGB uint8, and clear reasons for bad files."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageFile

from cnnkit.data import DEFAULT_MAX_PIXELS, ImageDecodeError, decode_image
from cnnkit.data.decode import read_size
from cnnkit.errors import CnnkitError


def png_bytes(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG", **kw)
    return buf.getvalue()


def noise(h: int = 16, w: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_rgb_png_roundtrip(tmp_path):
    a = noise()
    path = tmp_path / "a.png"
    Image.fromarray(a).save(path)
    for source in (path, str(path), path.read_bytes(), io.BytesIO(path.read_bytes())):
        out = decode_image(source)
        assert out.dtype == np.uint8 and out.shape == (16, 16, 3)
        np.testing.assert_array_equal(out, a)


def test_zero_byte_file(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageDecodeError, match="zero-byte file"):
        decode_image(tmp_path / "empty.png")
    with pytest.raises(ImageDecodeError, match="zero-byte file"):
        decode_image(b"")


def test_text_file_named_jpg(tmp_path):
    (tmp_path / "notes.jpg").write_text("this is not a picture\n")
    with pytest.raises(ImageDecodeError, match="^not an image$"):
        decode_image(tmp_path / "notes.jpg")


def test_missing_file_is_a_decode_error(tmp_path):
    with pytest.raises(ImageDecodeError, match="file not found"):
        decode_image(tmp_path / "nope.png")


@pytest.mark.parametrize("fraction", [0.05, 0.5, 0.9])
def test_truncated_png(tmp_path, fraction):
    data = png_bytes(Image.fromarray(noise(64, 64)))
    path = tmp_path / "cut.png"
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(ImageDecodeError, match="truncated PNG"):
        decode_image(path)


def test_truncated_jpeg_fails_even_if_pil_global_allows_it(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(noise(64, 64)).save(buf, "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    old = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = True  # as other code might set it
    try:
        with pytest.raises(ImageDecodeError, match="truncated JPEG"):
            decode_image(path)
        assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored, not left changed
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = old
    assert Image.MAX_IMAGE_PIXELS is not None


def test_a_jpeg_too_short_for_the_size_its_header_claims_is_corrupt(tmp_path):
    """A 16x16 JPEG whose frame header is rewritten to claim 6000x6000 would decode as 36 M
    grey pixels; it is refused from its length, before decoding, also with stray bytes
    between its segments (which libjpeg skips). Plain images, whose JPEGs spend the least on
    their pixels, still decode: the 1-pixel-wide progressive grey one is the tightest case."""
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(buf, "JPEG")
    forged = bytearray(buf.getvalue())
    frame = forged.find(b"\xff\xc0")
    forged[frame + 5 : frame + 9] = (6000).to_bytes(2, "big") * 2
    path = tmp_path / "forged.jpg"
    path.write_bytes(forged)
    stray = forged[:20] + b"\x00" + forged[20:]  # one byte after the APP0 segment
    for source in (bytes(forged), path, io.BytesIO(forged), bytes(stray)):
        with pytest.raises(ImageDecodeError, match="cannot hold the 6000x6000 pixels"):
            decode_image(source)
    cut = forged[:-2]  # without its end marker it is a cut-off file
    with pytest.raises(ImageDecodeError, match="^truncated JPEG$"):
        decode_image(bytes(cut))
    for mode, progressive, size in (
        ("L", False, (3000, 2000)),
        ("RGB", False, (3000, 2000)),
        ("L", True, (1, 20000)),
    ):
        plain = io.BytesIO()
        Image.new(mode, size, 255).save(
            plain, "JPEG", progressive=progressive, optimize=True, quality=10
        )
        assert decode_image(plain.getvalue()).shape == (size[1], size[0], 3)


def test_cmyk_jpeg(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(path, quality=95)
    out = decode_image(path)
    assert out.shape == (8, 8, 3)
    r, g, b = out[4, 4].astype(int)
    assert r > 200 and g < 60 and b < 60  # pure red


def test_16bit_png_scaled_by_type_range(tmp_path):
    a = np.full((6, 5), 40000, dtype=np.uint16)
    a[0, 0] = 65535
    a[0, 1] = 0
    path = tmp_path / "deep.png"
    Image.fromarray(a).save(path)
    assert Image.open(path).mode in ("I;16", "I")
    out = decode_image(path)
    assert out.shape == (6, 5, 3)
    assert tuple(out[3, 3]) == (156, 156, 156)  # 40000 >> 8, not min/max stretched
    assert tuple(out[0, 0]) == (255, 255, 255) and tuple(out[0, 1]) == (0, 0, 0)


def test_rgba_composited_on_white(tmp_path):
    a = np.zeros((2, 3, 4), dtype=np.uint8)
    a[0, 0] = (255, 0, 0, 0)  # transparent red -> white
    a[0, 1] = (0, 0, 255, 255)  # opaque blue
    a[0, 2] = (0, 0, 0, 128)  # half-transparent black -> mid grey
    path = tmp_path / "alpha.png"
    Image.fromarray(a, "RGBA").save(path)
    out = decode_image(path)
    assert tuple(out[0, 0]) == (255, 255, 255)
    assert tuple(out[0, 1]) == (0, 0, 255)
    assert all(abs(int(v) - 127) <= 1 for v in out[0, 2])
    np.testing.assert_array_equal(decode_image(a), out)  # arrays follow the same rule


def test_palette_with_and_without_transparency(tmp_path):
    im = Image.new("P", (4, 4), 1)
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    im.putpixel((0, 0), 0)
    plain = decode_image(png_bytes(im))
    assert tuple(plain[0, 0]) == (0, 0, 0) and tuple(plain[1, 1]) == (255, 0, 0)
    transparent = decode_image(png_bytes(im, transparency=0))
    assert tuple(transparent[0, 0]) == (255, 255, 255) and tuple(transparent[1, 1]) == (255, 0, 0)


def test_grayscale_and_one_bit(tmp_path):
    out = decode_image(png_bytes(Image.new("L", (3, 2), 100)))
    assert out.shape == (2, 3, 3) and (out == 100).all()
    out = decode_image(png_bytes(Image.new("1", (3, 2), 1)))
    assert (out == 255).all()
    out = decode_image(png_bytes(Image.new("LA", (3, 2), (0, 0))))
    assert (out == 255).all()  # fully transparent grey -> white


def test_exif_orientation_swaps_dims(tmp_path):
    im = Image.fromarray(noise(20, 40))  # H=20, W=40
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    path = tmp_path / "rot.jpg"
    im.save(path, exif=exif.tobytes())
    assert Image.open(path).size == (40, 20)
    assert decode_image(path).shape == (40, 20, 3)
    assert read_size(path) == (40, 20)


def test_pixel_limit_is_checked_from_the_header(tmp_path):
    path = tmp_path / "big.png"
    Image.new("RGB", (200, 100)).save(path)
    with pytest.raises(ImageDecodeError, match=r"200x100 pixels exceeds the limit of 19,999"):
        decode_image(path, max_pixels=19_999)
    with pytest.raises(ImageDecodeError, match="exceeds the limit"):
        read_size(path, max_pixels=100)
    with pytest.raises(ImageDecodeError, match="exceeds the limit"):
        decode_image(np.zeros((100, 200, 3), np.uint8), max_pixels=100)
    assert decode_image(path, max_pixels=20_000).shape == (100, 200, 3)
    assert decode_image(path, max_pixels=None).shape == (100, 200, 3)
    assert DEFAULT_MAX_PIXELS == 89_478_485


def test_pil_image_input_any_mode():
    assert decode_image(Image.new("L", (5, 4), 7)).shape == (4, 5, 3)
    out = decode_image(Image.new("RGBA", (2, 2), (10, 20, 30, 255)))
    assert tuple(out[0, 0]) == (10, 20, 30)
    out = decode_image(Image.new("YCbCr", (2, 2), (128, 128, 128)))
    assert out.shape == (2, 2, 3)


def test_empty_pil_images_are_refused():
    for size in ((0, 0), (5, 0)):
        with pytest.raises(ImageDecodeError, match=r"empty image \(\d+x\d+ pixels\)"):
            decode_image(Image.new("RGB", size))


@pytest.mark.parametrize("scale", [1.0, 255.0, 65535.0])
def test_float_tiffs_are_read_by_the_range_their_values_lie_in(tmp_path, scale):
    """A float TIFF holds 0-1, 0-255 or 0-65535 values: each gives the same grey ramp."""
    ramp = np.arange(256, dtype=np.uint8).reshape(16, 16)
    path = tmp_path / "f.tif"
    Image.fromarray((ramp / 255.0 * scale).astype(np.float32), "F").save(path)
    assert Image.open(path).mode == "F"
    out = decode_image(path)
    assert np.abs(out[..., 0].astype(int) - ramp).max() <= 1 and (out[..., 0] == out[..., 2]).all()


def test_float_tiffs_overshooting_one_are_clipped_and_no_data_pixels_are_black(tmp_path):
    ramp = np.linspace(0, 1.2, 64, dtype=np.float32).reshape(8, 8)  # a little over 1: 0-1
    ramp[0, :2] = np.nan  # a GIS file's 'no data'
    Image.fromarray(ramp, "F").save(tmp_path / "over.tif")
    out = decode_image(tmp_path / "over.tif")[..., 0].astype(int)
    expected = np.round(np.clip(np.nan_to_num(ramp), 0, 1) * 255).astype(int)
    assert np.abs(out - expected).max() <= 1


def test_a_16bit_pgm_is_scaled_by_its_type_not_its_values(tmp_path):
    """PIL opens a 16-bit PGM as mode I: dark values stay dark (only TIFF's are guessed)."""
    values = np.arange(256, dtype=">u2").reshape(16, 16)  # 0..255 of 65535: near black
    path = tmp_path / "dark.pgm"
    path.write_bytes(b"P5 16 16 65535\n" + values.tobytes())
    assert Image.open(path).mode.startswith("I")
    assert decode_image(path).max() == 0


def test_32bit_integer_tiffs_are_read_by_their_range_and_odd_values_refused(tmp_path):
    ramp = np.arange(256, dtype=np.int32).reshape(16, 16)
    for name, values in (("eight", ramp), ("sixteen", ramp * 257)):
        Image.fromarray(values).save(tmp_path / f"{name}.tif")
        assert Image.open(tmp_path / f"{name}.tif").mode == "I"
        assert np.array_equal(decode_image(tmp_path / f"{name}.tif")[..., 1], ramp)
    Image.fromarray(ramp * 100_000).save(tmp_path / "wide.tif")
    with pytest.raises(ImageDecodeError, match=r"32-bit pixel values 0..25500000"):
        decode_image(tmp_path / "wide.tif")
    Image.fromarray(np.full((4, 4), np.nan, np.float32)).save(tmp_path / "nan.tif")
    with pytest.raises(ImageDecodeError, match="not numbers"):
        decode_image(tmp_path / "nan.tif")
    Image.fromarray(np.full((4, 4), 9e6, np.float32)).save(tmp_path / "huge.tif")
    with pytest.raises(ImageDecodeError, match="lie in no image range"):
        decode_image(tmp_path / "huge.tif")


def test_eps_is_not_decoded_and_a_nul_in_a_path_is_one_error(tmp_path):
    Image.new("RGB", (8, 8), "red").save(tmp_path / "a.eps")  # PIL writes EPS without Ghostscript
    with pytest.raises(ImageDecodeError, match="unsupported format EPS"):
        decode_image(tmp_path / "a.eps")
    with pytest.raises(ImageDecodeError, match="NUL"):
        decode_image(str(tmp_path / "a\x00.png"))


def test_a_broken_exif_block_is_read_without_a_warning(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "exif.jpg"
    broken = b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff"
    Image.new("RGB", (16, 16), "blue").save(path, "JPEG", exif=broken)
    code = f"from cnnkit.data import decode_image; print(decode_image({str(path)!r}).shape)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "(16, 16, 3)"
    assert done.stderr == ""


@pytest.mark.parametrize(
    ("array", "expected"),
    [
        (np.full((4, 5), 9, np.uint8), 9),
        (np.full((4, 5, 1), 9, np.uint8), 9),
        (np.full((4, 5, 3), 9, np.uint8), 9),
        (np.full((4, 5, 4), 9, np.uint8), 9),  # opaque alpha
        (np.full((4, 5, 3), 40000, np.uint16), 156),
        (np.full((4, 5), 0.5, np.float32), 128),
        (np.full((4, 5, 3), 1.0, np.float64), 255),
        (np.ones((4, 5), bool), 255),
    ],
)
def test_array_inputs(array, expected):
    if array.ndim == 3 and array.shape[2] == 4:
        array[..., 3] = 255
    out = decode_image(array)
    assert out.dtype == np.uint8 and out.shape == (4, 5, 3)
    assert (out == expected).all()


def test_bad_arrays_are_refused():
    with pytest.raises(ImageDecodeError, match="dtype"):
        decode_image(np.zeros((4, 4, 3), np.int32))
    with pytest.raises(ImageDecodeError, match="shape"):
        decode_image(np.zeros((3, 4, 4, 2), np.uint8))
    with pytest.raises(ImageDecodeError, match=r"empty image \(0x0 pixels\)"):
        decode_image(np.zeros((0, 0, 3), np.uint8))
    # 0-255 values in a float array would be clipped to white: refused, not guessed at
    with pytest.raises(ImageDecodeError, match=r"must lie in \[0, 1\], not 0..254"):
        decode_image(np.arange(255, dtype=np.float32).reshape(15, 17))
    with pytest.raises(ImageDecodeError, match="must lie in"):
        decode_image(np.full((4, 4), np.nan, np.float32))
    with pytest.raises(ImageDecodeError, match=r"not -0.5..0.5"):  # mean/std-normalised
        decode_image(np.linspace(-0.5, 0.5, 16, dtype=np.float32).reshape(4, 4))
    # a resize's overshoot just outside [0, 1] is clipped, as before
    assert (decode_image(np.full((4, 4), 1.0000001, np.float32)) == 255).all()
    assert (decode_image(np.full((4, 4), -0.01, np.float32)) == 0).all()


def test_tensors_in_torchvisions_layout_or_as_arrays():
    import torch

    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    chw = torch.from_numpy(rgb).permute(2, 0, 1)
    assert np.array_equal(decode_image(chw), rgb)
    assert np.array_equal(decode_image(chw.float() / 255), rgb)
    assert np.array_equal(decode_image(torch.from_numpy(rgb)), rgb)  # (H, W, C) as an array
    assert decode_image(chw.bfloat16() / 255).shape == (5, 7, 3)
    assert np.array_equal(decode_image(chw[0]), np.repeat(rgb[..., :1], 3, axis=2))
    with pytest.raises(ImageDecodeError, match="a batch tensor"):
        decode_image(chw[None])
    # a first size of 1, 3 or 4 is torchvision's channels, whatever the last size is
    narrow = torch.from_numpy(rgb[:, :3]).permute(2, 0, 1)  # (3, 5, 3): 5 x 3 pixels
    assert np.array_equal(decode_image(narrow), rgb[:, :3])


def test_resize_policies():
    a = np.zeros((20, 60, 3), np.uint8)  # H=20, W=60: red | green | blue thirds
    a[:, :20, 0] = a[:, 20:40, 1] = a[:, 40:, 2] = 255
    assert decode_image(a, size=(10, 10)).shape == (10, 10, 3)
    crop = decode_image(a, size=(10, 10), resize="crop")
    assert (crop[:, :, 1] > 200).all() and (crop[:, :, 0] < 60).all()  # only the green middle
    pad = decode_image(np.full((20, 40, 3), 255, np.uint8), size=(20, 20), resize="pad")
    assert (pad[:4] == 0).all() and (pad[-4:] == 0).all() and (pad[8:12] == 255).all()
    same = decode_image(a, size=(20, 60), resize="crop")
    np.testing.assert_array_equal(same, a)


def test_unknown_resize_policy_suggests():
    with pytest.raises(CnnkitError, match="did you mean 'stretch'"):
        decode_image(np.zeros((4, 4, 3), np.uint8), size=(2, 2), resize="strech")
