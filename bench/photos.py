"""The bench's inputs: real photos (scikit-image's bundled ones) upscaled to 1920x1080 JPEG.

Nothing is downloaded: the photos are files inside the installed `skimage` package. Every
HTTP system gets the very same request bodies: dlpipe's JSON job, one base64 image.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pybase64

PHOTOS = ("chelsea.png", "coffee.png", "astronaut.png", "motorcycle_left.png", "rocket.jpg")
FHD = (1920, 1080)
JPEG_QUALITY = 90


def fhd_jpegs(names: tuple[str, ...] = PHOTOS) -> list[bytes]:
    """Each photo as RGB, resized (bicubic) to 1920x1080, saved as JPEG quality 90."""
    import skimage  # noqa: PLC0415 - a dev/bench dependency
    from PIL import Image  # noqa: PLC0415

    data = Path(skimage.__file__).resolve().parent / "data"
    out = []
    for name in names:
        with Image.open(data / name) as img:
            buf = io.BytesIO()
            img.convert("RGB").resize(FHD, Image.Resampling.BICUBIC).save(buf, "JPEG", quality=JPEG_QUALITY)
            out.append(buf.getvalue())
    return out


def request_body(jpeg: bytes) -> bytes:
    """The JSON body every system is sent: {"inputs": [{"image_base64": ...}]}."""
    return json.dumps({"inputs": [{"image_base64": base64.b64encode(jpeg).decode("ascii")}]}).encode()


def image_from_body(body: dict) -> bytes:
    """The image bytes of a request body (the servers' side of `request_body`)."""
    try:
        # The same fast decoder as dlpipe's API (pybase64, one of dlpipe's dependencies, so every
        # peer's virtualenv has it): the systems compare on how they serve, not on base64.
        return pybase64.b64decode(body["inputs"][0]["image_base64"], validate=True)
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise ValueError(f'expected {{"inputs": [{{"image_base64": ...}}]}}: {exc}') from None
