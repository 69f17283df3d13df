"""Image preprocessing: untrusted bytes -> a uint8 HxWx3 crop ready for an ImageNet CNN.

An image input is `{"image": <bytes>}`, `{"image_url": <http(s) URL>}` (fetched here,
through workers.fetch: SSRF guard, deadline, size cap) or `{"path": <path under the data
root>}` (read here, checked again under DLPIPE_DATA_ROOT). `load_image_bytes` turns any
of them into bytes; every image stage function should start with it. The settings it
needs come from the worker's settings through `configure` (the preprocess worker calls it at
start); unconfigured, the defaults apply: no data root, private addresses refused.

Decoding is restricted to a format allow-list and a pixel cap checked from the header,
before any pixel is decoded. JPEGs are decoded at a reduced scale in the DCT
(`Image.draft`), which is several times cheaper for camera-sized photos.
Resizing uses Pillow's antialiased bilinear filter (as torchvision's `Resize`).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from shared import datapaths, netguard
from shared.errors import ItemError
from shared.settings import Settings
from workers.fetch import FetchPolicy, fetch

log = logging.getLogger(__name__)

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
_JPEG_FORMATS = {"JPEG", "MPO"}  # Pillow's JPEG opener reports multi-picture JPEGs as MPO


def _mpx(pixels: int) -> str:
    return f"{pixels / 1e6:.3g} Mpx"


@dataclass(frozen=True)
class InputConfig:
    """How image inputs given by reference are read: URLs fetched, paths under the data root."""

    fetch: FetchPolicy = field(default_factory=FetchPolicy)
    data_root: Path | None = None
    max_bytes: int = 20 * 1024 * 1024

    @classmethod
    def from_settings(cls, settings: Settings) -> InputConfig:
        policy = FetchPolicy(
            timeout_s=settings.fetch_timeout_s,
            max_bytes=settings.max_input_bytes,
            max_redirects=settings.fetch_max_redirects,
            address=netguard.AddressPolicy(allow_private=settings.fetch_allow_private),
        )
        return cls(fetch=policy, data_root=settings.data_root, max_bytes=settings.max_input_bytes)


_config: InputConfig | None = None


def configure(config: InputConfig | Settings | None) -> None:
    """Use these settings for image inputs in this process (None: back to the defaults)."""
    global _config
    _config = InputConfig.from_settings(config) if isinstance(config, Settings) else config


def input_config() -> InputConfig:
    global _config
    if _config is None:
        _config = InputConfig()
    return _config


def load_image_bytes(inp: Any, config: InputConfig | None = None) -> bytes:
    """The image's bytes, whichever way the input gives them; ItemError if it cannot be had."""
    if not isinstance(inp, dict):
        raise ItemError(f"input has no image bytes, image_url or path (got a {type(inp).__name__})")
    if "image" in inp:
        data = inp["image"]
        if isinstance(data, (bytearray, memoryview)):
            data = bytes(data)
        if not isinstance(data, bytes):
            raise ItemError("input has no image bytes (expected {'image': <bytes>})")
    elif isinstance(inp.get("image_url"), str):
        config = config or input_config()
        data = fetch(inp["image_url"], config.fetch, label="image_url", kind="an image")
    elif isinstance(inp.get("path"), str):
        config = config or input_config()
        try:
            data = datapaths.read_file(config.data_root, inp["path"], config.max_bytes)
        except datapaths.PathRefused as exc:
            if config.data_root is None:
                raise ItemError(str(exc)) from None
            raise ItemError(f"path {inp['path']}: {exc}") from None
    else:
        raise ItemError("input has no image bytes, image_url or path")
    if not data:
        raise ItemError("the image is empty (0 bytes)")
    return data


def _open(
    data: bytes, max_pixels: int, draft: Callable[[int, int], tuple[int, int]] | None
) -> tuple[Image.Image, tuple[int, int]]:
    """Open (header only), check the size, then decode; JPEGs at a reduced scale in the DCT, the
    decoded size at least `draft(width, height)` (stored orientation) in both dimensions.
    Returns the image and its size as stored (before any DCT scaling)."""
    try:
        img = Image.open(io.BytesIO(data), formats=list(ALLOWED_FORMATS))
    except UnidentifiedImageError:
        allowed = ", ".join(ALLOWED_FORMATS)
        raise ItemError(
            f"not a decodable image (cannot identify image file; allowed formats: {allowed})"
        ) from None
    except Image.DecompressionBombError as exc:
        raise ItemError(f"image is too large: {exc}") from None
    except Exception as exc:  # a malformed header can raise nearly anything from a plugin
        raise ItemError(f"not a decodable image ({type(exc).__name__}: {exc})") from None
    width, height = img.size
    if width * height > max_pixels:
        img.close()
        raise ItemError(
            f"image is {width}x{height} = {_mpx(width * height)}, over the {_mpx(max_pixels)} cap"
        )
    if width < 1 or height < 1:
        raise ItemError(f"image has no pixels ({width}x{height})")
    if img.format in _JPEG_FORMATS and draft is not None:
        # Pillow picks the largest DCT scale s in {1, 2, 4, 8} that keeps both sides at least
        # the size asked for.
        img.draft("RGB", draft(width, height))
    try:
        img.load()
    except Exception as exc:  # truncated data, bad chunks, decoder errors
        raise ItemError(f"not a decodable image ({img.format}: {exc})") from None
    return img, (width, height)


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation tag (1: as stored; 5-8 swap width and height)."""
    try:
        return int(img.getexif().get(ExifTags.Base.Orientation, 1) or 1)
    except Exception:  # unreadable EXIF: keep the pixels as stored
        log.debug("ignoring unreadable EXIF data")
        return 1


def _orient(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation tag, if any (a no-op for most images)."""
    if _orientation(img) == 1:
        return img
    return ImageOps.exif_transpose(img) or img


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode.startswith("I"):  # 16-bit grayscale (PNG, TIFF): Pillow's convert would clip at 255
        pixels = np.asarray(img).astype(np.int64) >> 8
        img = Image.fromarray(pixels.clip(0, 255).astype(np.uint8), "L")
    elif img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")  # composite onto white rather than letting black show through
        img = Image.alpha_composite(Image.new("RGBA", img.size, (255, 255, 255, 255)), img)
    return img.convert("RGB")


def decode_resize_crop(
    inp: dict, resize: int = 256, crop: int = 224, max_pixels: int = 50_000_000
) -> np.ndarray:
    """Load the input's image (bytes, URL or path: `load_image_bytes`) and decode it, resize its
    short side to `resize`, center-crop `crop` x `crop`.

    Returns a C-contiguous uint8 array of shape (crop, crop, 3). Raises ItemError for
    input that is not an allowed, decodable image of at most `max_pixels` pixels.
    """
    if crop > resize:
        raise ValueError(f"crop ({crop}) must not exceed resize ({resize})")
    return resize_crop(open_rgb(inp, resize, max_pixels), resize, crop)


def open_rgb(inp: dict, min_side: int, max_pixels: int = 50_000_000) -> Image.Image:
    """The input's image (`load_image_bytes`), checked and decoded as `decode_resize_crop` does
    (a JPEG at the smallest DCT scale whose short side stays >= `min_side`), upright, RGB."""
    # Decoded short side >= min_side: Pillow's DCT scale s <= min(w, h) // min_side.
    img, _ = _open(load_image_bytes(inp), max_pixels, lambda w, h: (min_side, min_side))
    return _to_rgb(_orient(img))


def decode_fit(inp: dict, max_side: int, max_pixels: int = 50_000_000) -> tuple[Image.Image, tuple[int, int]]:
    """Load the input's image (`load_image_bytes`), upright RGB, scaled down (never up) so its
    longer side is at most `max_side`; and the original's upright (width, height), so that
    what is found in the scaled image can be given in the original's pixels.

    JPEGs are decoded straight at a reduced scale where that still leaves `max_side`.
    Raises ItemError as `decode_resize_crop` does.
    """
    if max_side < 1:
        raise ValueError(f"max_side must be at least 1, got {max_side}")

    def draft(width: int, height: int) -> tuple[int, int]:
        ratio = min(1.0, max_side / max(width, height))
        return max(1, int(width * ratio)), max(1, int(height * ratio))

    img, stored = _open(load_image_bytes(inp), max_pixels, draft)
    swapped = _orientation(img) in (5, 6, 7, 8)
    original = (stored[1], stored[0]) if swapped else stored
    return fit_within(_to_rgb(_orient(img)), max_side), original


def fit_within(img: Image.Image, max_side: int) -> Image.Image:
    """`img` scaled down (antialiased bilinear) so its longer side is at most `max_side`."""
    width, height = img.size
    if max(width, height) <= max_side:
        return img
    ratio = max_side / max(width, height)
    size = (max(1, round(width * ratio)), max(1, round(height * ratio)))
    return img.resize(size, Image.Resampling.BILINEAR)


def resize_crop(img: Image.Image, resize: int = 256, crop: int = 224) -> np.ndarray:
    """An RGB image, short side resized to `resize` (antialiased bilinear), center-cropped to
    `crop` x `crop`: a C-contiguous, writable uint8 array of shape (crop, crop, 3).

    Every image-like input (photos, video frames) goes through this same step.
    """
    if crop > resize:
        raise ValueError(f"crop ({crop}) must not exceed resize ({resize})")
    width, height = img.size
    scale = resize / min(width, height)
    size = (max(resize, round(width * scale)), max(resize, round(height * scale)))
    left, top = (size[0] - crop) // 2, (size[1] - crop) // 2
    if size == img.size:
        img = img.crop((left, top, left + crop, top + crop))
    else:  # resize only the part the crop keeps: the crop's box in the source's coordinates
        sx, sy = width / size[0], height / size[1]
        box = (left * sx, top * sy, (left + crop) * sx, (top + crop) * sy)
        img = img.resize((crop, crop), Image.Resampling.BILINEAR, box=box)
    return np.array(img, dtype=np.uint8, order="C")  # a writable copy (np.asarray is read-only)
