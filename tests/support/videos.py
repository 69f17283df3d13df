"""Small test videos made with PyAV from the bundled photos (tests/support/photos.py): nothing downloaded.

`cat_then_coffee()` is 3 s at 10 fps, 320x240, H.264 in MP4 with a keyframe every second:
frames 0-14 (0.0-1.4 s) show the cat, frames 15-29 (1.5-2.9 s) the espresso cup. So the
frame at 1.0 s is the cat, at 1.5 s and 2.0 s the coffee, and 3.0 s is past the end.
`astronaut_then_coffee()` is the same with the astronaut (one face) for the cat.
"""

from __future__ import annotations

import io
from functools import lru_cache

import av
import numpy as np
from PIL import Image

from tests.support.photos import photo_rgb
from workers.transforms.image import resize_crop

SIZE = (320, 240)
SWITCH_S = 1.5  # the cat before, the coffee from here on


@lru_cache(maxsize=4)
def scenes(first: str = "chelsea.png", second: str = "coffee.png") -> tuple[Image.Image, Image.Image]:
    return photo_rgb(first).resize(SIZE), photo_rgb(second).resize(SIZE)


def make_video(
    seconds: float = 3.0,
    fps: int = 10,
    *,
    codec: str = "libx264",
    fmt: str = "mp4",
    gop: int = 10,
    photos: tuple[str, str] = ("chelsea.png", "coffee.png"),
) -> bytes:
    """The first photo (the cat) until SWITCH_S, then the second (the coffee), `fps` frames a
    second for `seconds`."""
    cat, coffee = scenes(*photos)
    out = io.BytesIO()
    with av.open(out, "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = SIZE[0], SIZE[1], "yuv420p"
        stream.gop_size = gop
        for i in range(round(seconds * fps)):
            frame = av.VideoFrame.from_image(cat if i < SWITCH_S * fps - 1e-9 else coffee)
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return out.getvalue()


@lru_cache(maxsize=4)
def cat_then_coffee(fmt: str = "mp4", codec: str = "libx264") -> bytes:
    return make_video(fmt=fmt, codec=codec)


@lru_cache(maxsize=1)
def astronaut_then_coffee() -> bytes:
    """The astronaut (a face) until SWITCH_S, then the espresso cup (none): 3 s, MP4."""
    return make_video(photos=("astronaut.png", "coffee.png"))


def references(resize: int = 256, crop: int = 224) -> dict[str, np.ndarray]:
    """The two scenes, resized and cropped as frames are: what a decoded frame should look like."""
    cat, coffee = scenes()
    return {"cat": resize_crop(cat, resize, crop), "coffee": resize_crop(coffee, resize, crop)}


def scene_of(crop: np.ndarray) -> str:
    """Which scene a frame's crop shows: the reference it is much closer to (it must be)."""
    distance = {
        name: float(np.abs(crop.astype(np.float32) - ref).mean()) for name, ref in references().items()
    }
    best, other = sorted(distance, key=distance.get)  # type: ignore[arg-type]
    assert distance[best] < 10 < distance[other], distance  # lossy, but never ambiguous
    return best
