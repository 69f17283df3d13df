"""Real photo bytes for tests, read from the images scikit-image ships in its package.

Only files bundled inside the `skimage/data` folder are read (by path, with Pillow):
nothing is downloaded. Known photos: chelsea.png (a cat), coffee.png (an espresso
cup), motorcycle_left.png, astronaut.png, rocket.jpg.
"""

from __future__ import annotations

import io
from functools import lru_cache
from pathlib import Path

import skimage
from PIL import Image

DATA_DIR = Path(skimage.__file__).resolve().parent / "data"
FHD = (1920, 1080)


def photo_path(name: str) -> Path:
    path = DATA_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"no bundled scikit-image photo {name!r} in {DATA_DIR}")
    return path


@lru_cache(maxsize=32)
def photo_bytes(name: str, fmt: str | None = "JPEG", size: tuple[int, int] | None = None) -> bytes:
    """The photo's bytes: as stored (fmt=None), or re-encoded as `fmt`, optionally resized to `size`.

    `size` is (width, height), e.g. `FHD` for a 1920x1080 photo; the aspect ratio is not kept.
    """
    path = photo_path(name)
    if fmt is None and size is None:
        return path.read_bytes()
    with Image.open(path) as img:
        img = img.convert("RGB")
        if size is not None:
            img = img.resize(size, Image.Resampling.BICUBIC)
        out = io.BytesIO()
        save_kwargs = {"quality": 92} if (fmt or "").upper() == "JPEG" else {}
        img.save(out, format=fmt or "PNG", **save_kwargs)
        return out.getvalue()


def photo_rgb(name: str) -> Image.Image:
    """The photo as a loaded RGB Pillow image (a fresh copy each call)."""
    with Image.open(photo_path(name)) as img:
        return img.convert("RGB")


def corrupt_bytes() -> bytes:
    """Bytes that start like a JPEG but are not an image."""
    return b"\xff\xd8\xff\xe0" + b"this is not really a jpeg" * 20


def truncated_jpeg(name: str = "chelsea.png") -> bytes:
    """A real JPEG cut off halfway through its scan data."""
    data = photo_bytes(name, "JPEG")
    return data[: len(data) // 2]
