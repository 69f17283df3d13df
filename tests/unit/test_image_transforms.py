"""decode_resize_crop: untrusted image bytes -> uint8 224x224x3, or an ItemError with a reason."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile, JpegImagePlugin

from shared.errors import ItemError
from tests.support.photos import FHD, corrupt_bytes, photo_bytes, photo_rgb, truncated_jpeg
from workers.transforms.image import decode_resize_crop


def encode(img: Image.Image, fmt: str, **kwargs: object) -> bytes:
    out = io.BytesIO()
    img.save(out, format=fmt, **kwargs)
    return out.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height RGB pixels (its pixel data is a stub)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def decode_and_record(
    monkeypatch: pytest.MonkeyPatch, inp: dict, **kwargs: int
) -> tuple[np.ndarray | ItemError, list[tuple[int, int]]]:
    """Run decode_resize_crop, recording the size of every image whose pixels Pillow decodes."""
    decoded: list[tuple[int, int]] = []
    original = ImageFile.ImageFile.load

    def spy(self: ImageFile.ImageFile) -> object:
        if self.tile:  # pixels not decoded yet: this call decodes them
            decoded.append(self.size)
        return original(self)

    with monkeypatch.context() as patch:
        patch.setattr(ImageFile.ImageFile, "load", spy)
        try:
            result: np.ndarray | ItemError = decode_resize_crop(inp, **kwargs)
        except ItemError as exc:
            result = exc
    return result, decoded


# -- shapes and formats ---------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF"])
def test_every_allowed_format_gives_a_contiguous_uint8_crop(fmt: str) -> None:
    out = decode_resize_crop({"image": photo_bytes("chelsea.png", fmt)})
    assert out.shape == (224, 224, 3)
    assert out.dtype == np.uint8
    assert out.flags["C_CONTIGUOUS"] and out.flags["WRITEABLE"]
    assert out.std() > 10  # a real photo, not a blank


def test_other_sizes_and_the_original_file() -> None:
    out = decode_resize_crop({"image": photo_bytes("rocket.jpg", None)}, resize=160, crop=128)
    assert out.shape == (128, 128, 3)


@pytest.mark.parametrize("mode,fmt", [("L", "PNG"), ("P", "GIF"), ("RGBA", "WEBP"), ("CMYK", "JPEG")])
def test_other_modes_become_rgb(mode: str, fmt: str) -> None:
    img = photo_rgb("coffee.png")
    out = decode_resize_crop({"image": encode(img.convert(mode), fmt)})
    ref = decode_resize_crop({"image": encode(img, "PNG")})
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    gray = mode in ("L",)
    diff = np.abs(out.astype(int) - (ref.mean(axis=2, keepdims=True) if gray else ref)).mean()
    assert diff < 20  # the same picture, give or take palette, gray or lossy coding


def test_16_bit_grayscale_keeps_its_tones() -> None:
    ramp = np.linspace(0, 65535, 512 * 512).reshape(512, 512).astype(np.uint16)
    out = decode_resize_crop({"image": encode(Image.fromarray(ramp), "PNG")})
    assert out[0, 0, 0] < 30 and out[-1, -1, 0] > 225
    assert 100 < out[112, 112, 0] < 156
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


def test_transparent_pixels_become_white() -> None:
    img = Image.new("RGBA", (300, 300), (255, 0, 0, 0))
    out = decode_resize_crop({"image": encode(img, "PNG")})
    assert (out == 255).all()


# -- geometry ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("width,height", [(1024, 512), (512, 1024)])
def test_short_side_is_resized_then_center_cropped(width: int, height: int) -> None:
    # R encodes x and G encodes y, so each output pixel says where in the source it came from.
    x = np.arange(width) * 255 // (width - 1)
    y = np.arange(height) * 255 // (height - 1)
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[..., 0] = x[None, :]
    pixels[..., 1] = y[:, None]
    out = decode_resize_crop({"image": encode(Image.fromarray(pixels), "PNG")}, resize=256, crop=224)

    # Short side 512 -> 256 (scale 1/2), long side 1024 -> 512; crop offsets (512-224)//2 = 144 and 16.
    scale = 2.0
    long_offset, short_offset = 144, 16
    col_off, row_off = (long_offset, short_offset) if width > height else (short_offset, long_offset)
    src_x = (np.arange(224) + col_off + 0.5) * scale - 0.5
    src_y = (np.arange(224) + row_off + 0.5) * scale - 0.5
    expected_r = src_x * 255 / (width - 1)
    expected_g = src_y * 255 / (height - 1)
    np.testing.assert_allclose(out[112, 2:-2, 0], expected_r[2:-2], atol=1.5)
    np.testing.assert_allclose(out[2:-2, 112, 1], expected_g[2:-2], atol=1.5)


def test_exif_orientation_is_applied() -> None:
    # Stored as 400x200 with the top half red; EXIF 6 says "rotate 90 degrees clockwise to display".
    img = Image.new("RGB", (400, 200), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 400, 100))
    exif = Image.Exif()
    exif[0x0112] = 6
    out = decode_resize_crop({"image": encode(img, "JPEG", exif=exif, quality=95)})
    # Displayed upright it is 200x400 with the red half on the right.
    assert out[:, :100, 0].mean() < 30 and out[:, :100, 2].mean() > 220
    assert out[:, 124:, 0].mean() > 220 and out[:, 124:, 2].mean() < 30


# -- JPEG draft decoding ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size,decoded",
    [
        (FHD, (480, 270)),  # 1080 // 256 = 4 -> 1/4 scale
        ((2048, 1024), (512, 256)),  # exactly 4x the target short side
        ((2047, 1023), (1024, 512)),  # 1023 // 256 = 3 -> 1/2 scale
        ((300, 400), (300, 400)),  # small: no reduction
    ],
)
def test_big_jpegs_are_decoded_at_reduced_scale(
    monkeypatch: pytest.MonkeyPatch, size: tuple[int, int], decoded: tuple[int, int]
) -> None:
    data = photo_bytes("chelsea.png", "JPEG", size)
    out, sizes = decode_and_record(monkeypatch, {"image": data})
    assert isinstance(out, np.ndarray) and out.shape == (224, 224, 3)
    assert sizes == [decoded]
    assert min(sizes[0]) >= 256


def test_draft_decoding_stays_close_to_a_full_resolution_reference() -> None:
    data = photo_bytes("coffee.png", "JPEG", FHD)
    with Image.open(io.BytesIO(data)) as full:
        full = full.convert("RGB")  # decoded at full scale: no draft
    ref = full.resize((455, 256), Image.Resampling.BILINEAR).crop((115, 16, 339, 240))
    out = decode_resize_crop({"image": data})
    diff = np.abs(out.astype(np.int16) - np.asarray(ref, dtype=np.int16))
    assert diff.mean() < 1.5  # a crop one pixel off would differ by ~5 on average
    assert np.percentile(diff, 99) < 12


def test_draft_is_not_used_for_png(monkeypatch: pytest.MonkeyPatch) -> None:
    data = photo_bytes("chelsea.png", "PNG", FHD)
    _, sizes = decode_and_record(monkeypatch, {"image": data})
    assert sizes == [FHD]


def test_jpeg_draft_really_is_the_reduced_path(monkeypatch: pytest.MonkeyPatch) -> None:
    requested: list[tuple[int, int] | None] = []
    original = JpegImagePlugin.JpegImageFile.draft

    def spy(self: JpegImagePlugin.JpegImageFile, mode: str | None, size: tuple[int, int] | None) -> object:
        requested.append(size)
        return original(self, mode, size)

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    decode_resize_crop({"image": photo_bytes("coffee.png", "JPEG", FHD)}, resize=256)
    assert requested == [(256, 256)]


# -- bad input ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "inp,reason",
    [
        ({"image": corrupt_bytes()}, "not a decodable image"),
        ({"image": b"hello, world"}, "cannot identify image file"),
        ({"image": b""}, "empty"),
        ({"image": "not bytes"}, "no image bytes"),
        ({}, "no image bytes"),
        ("image", "no image bytes"),
    ],
)
def test_undecodable_input_is_an_item_error(inp: object, reason: str) -> None:
    with pytest.raises(ItemError, match=reason):
        decode_resize_crop(inp)  # type: ignore[arg-type]


def test_truncated_jpeg_is_an_item_error() -> None:
    with pytest.raises(ItemError, match="not a decodable image.*truncated"):
        decode_resize_crop({"image": truncated_jpeg()})


def test_truncated_png_is_an_item_error() -> None:
    data = photo_bytes("chelsea.png", "PNG")
    with pytest.raises(ItemError, match="not a decodable image"):
        decode_resize_crop({"image": data[: len(data) // 3]})


@pytest.mark.parametrize("fmt", ["PPM", "ICO", "TGA", "PCX"])
def test_formats_outside_the_allow_list_are_refused(fmt: str) -> None:
    data = encode(photo_rgb("chelsea.png").resize((64, 48)), fmt)
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == fmt  # Pillow itself could read it
    with pytest.raises(ItemError, match="allowed formats: JPEG, PNG"):
        decode_resize_crop({"image": data})


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_pixel_cap_is_checked_from_the_header_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    data = png_header_only(10_000, 10_000)
    assert len(data) < 200
    err, sizes = decode_and_record(monkeypatch, {"image": data})
    assert isinstance(err, ItemError)
    assert str(err) == "image is 10000x10000 = 100 Mpx, over the 50 Mpx cap"
    assert sizes == []


def test_decompression_bombs_past_pillows_limit_are_item_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    err, sizes = decode_and_record(monkeypatch, {"image": png_header_only(30_000, 30_000)})
    assert isinstance(err, ItemError) and "too large" in str(err)
    assert sizes == []


def test_the_cap_is_a_parameter() -> None:
    data = photo_bytes("chelsea.png", "PNG")  # 451x300 = 0.135 Mpx
    assert decode_resize_crop({"image": data}, max_pixels=451 * 300).shape == (224, 224, 3)
    with pytest.raises(ItemError, match=r"451x300 = 0.135 Mpx, over the 0.1 Mpx cap"):
        decode_resize_crop({"image": data}, max_pixels=100_000)


def test_input_is_not_modified() -> None:
    data = photo_bytes("coffee.png", "JPEG")
    inp = {"image": data}
    decode_resize_crop(inp)
    assert inp == {"image": data}
