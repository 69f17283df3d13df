"""Video frames: one frame of a video input -> the same uint8 crop an image gets.

The API turns a video input into one item per frame time (shared/video.py). A frame item's
input is `{"t": <seconds>}` with either

- `"video_path"`: the video's path relative to the data root, checked again here under
  this worker's DLPIPE_DATA_ROOT (the image module's `configure`d InputConfig), as image
  paths are; or
- `"blob"`: the uploaded video's bytes. The video is stored once per job (a job blob, see
  shared/keys.py); the item hash's `blob` field names it and Store.load puts its bytes here.

`frame_at` seeks to the keyframe at or before t, decodes forward to the frame shown at t
(the first one at or after t less half a frame interval: the frame nearest t), turns it
upright (the container's display rotation), converts it to RGB and resizes/crops it
exactly as images are (`image.resize_crop`). Only MP4/MOV, Matroska/WebM and AVI
containers are opened (shared/video.py says why). Decoding uses one thread: a
preprocess process is meant to use one core.
"""

from __future__ import annotations

import io
import math
from typing import Any, BinaryIO

import av
import numpy as np
from PIL import Image

from shared import datapaths
from shared.errors import ItemError
from shared.settings import Settings
from shared.video import VideoError, duration_s, ffmpeg_reason, open_container, video_stream
from workers.transforms import image
from workers.transforms.image import InputConfig, resize_crop

_TURNS = {1: Image.Transpose.ROTATE_90, 2: Image.Transpose.ROTATE_180, 3: Image.Transpose.ROTATE_270}


def configure(config: InputConfig | Settings | None) -> None:
    """Video paths are read under the same data root as image paths: one configuration."""
    image.configure(config)


def _frame_time(inp: dict[str, Any]) -> float:
    t = inp.get("t")
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t < 0:
        raise ItemError(f"input has no frame time (expected 't': seconds >= 0, got {t!r})")
    return float(t)


def _open_source(inp: Any) -> BinaryIO:
    """A binary file object over the video, whichever way the input gives it."""
    if not isinstance(inp, dict):
        raise ItemError(f"input has no video (got a {type(inp).__name__})")
    if "blob" in inp:
        data = inp["blob"]
        if not isinstance(data, (bytes, bytearray, memoryview)) or not data:
            raise ItemError("input has no video bytes (the uploaded video is empty or no longer stored)")
        return io.BytesIO(bytes(data))
    if isinstance(inp.get("video_path"), str):
        root = image.input_config().data_root
        rel = inp["video_path"]
        try:
            full, _ = datapaths.resolve_under(root, rel)
            if not full.is_file():
                raise datapaths.PathRefused("not a file")
            return open(full, "rb")
        except datapaths.PathRefused as exc:
            raise ItemError(str(exc) if root is None else f"video_path {rel}: {exc}") from None
        except OSError as exc:
            raise ItemError(f"video_path {rel}: cannot read the file ({exc.strerror or exc})") from None
    raise ItemError("input has no video (expected 'video_path' or an uploaded video)")


def upright(img: Image.Image, rotation: float | int | None) -> Image.Image:
    """Apply a display rotation (degrees counterclockwise, as FFmpeg's display matrix gives it;
    rounded to quarter turns)."""
    if not rotation:
        return img
    turns = round(rotation / 90) % 4
    return img.transpose(_TURNS[turns]) if turns else img


class _SeekMissed(Exception):
    """The demuxer's seek landed after the wanted time (an imprecise index)."""


def _find_frame(container: Any, stream: Any, t: float, *, seek: bool) -> Any:
    """The frame shown at t: the first at or after t less half a frame interval; at the very
    end, the last frame if t still falls within its display time. None if there is none."""
    rate = stream.average_rate or stream.guessed_rate
    interval = 1.0 / float(rate) if rate else 0.0
    origin = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
    if seek:
        try:
            container.seek(
                int((origin + t) / stream.time_base), stream=stream, backward=True, any_frame=False
            )
        except av.FFmpegError:
            raise _SeekMissed from None
    last, last_t = None, 0.0
    for frame in container.decode(stream):
        if frame.time is None:
            continue
        frame_t = frame.time - origin
        if seek and last is None and frame_t > t + interval / 2 + 1e-6:
            raise _SeekMissed
        if frame_t >= t - interval / 2 - 1e-6:
            return frame
        last, last_t = frame, frame_t
    if last is not None and t < last_t + interval - 1e-6:
        return last
    return None


def _decode_at(file: BinaryIO, t: float, max_pixels: int) -> Image.Image:
    seek = t > 0
    while True:
        try:
            container = open_container(file)
        except VideoError as exc:
            raise ItemError(f"not a readable video ({exc})") from None
        with container:
            try:
                stream = video_stream(container)
            except VideoError as exc:
                raise ItemError(f"not a readable video ({exc})") from None
            codec = stream.codec_context
            width, height = (codec.width, codec.height) if codec is not None else (0, 0)
            if width * height > max_pixels:
                raise ItemError(f"video frames are {width}x{height}, over the {max_pixels / 1e6:.3g} Mpx cap")
            if codec is not None:
                codec.thread_count = 1
            duration = duration_s(container, stream)
            if duration is not None and t >= duration:
                raise ItemError(f"no frame at {t:.3f} s (video is {duration:.3f} s long)")
            try:
                frame = _find_frame(container, stream, t, seek=seek)
            except _SeekMissed:
                seek = False  # decode from the start instead
                file.seek(0)
                continue
            except av.FFmpegError as exc:
                raise ItemError(f"cannot decode the frame at {t:.3f} s ({ffmpeg_reason(exc)})") from None
            if frame is None:
                length = f"video is {duration:.3f} s long" if duration is not None else "past the last frame"
                raise ItemError(f"no frame at {t:.3f} s ({length})")
            try:
                return upright(frame.to_image(), getattr(frame, "rotation", 0))
            except (av.FFmpegError, ValueError) as exc:
                raise ItemError(
                    f"cannot convert the frame at {t:.3f} s to RGB ({ffmpeg_reason(exc)})"
                ) from None


def frame_at(
    inp: dict[str, Any], resize: int = 256, crop: int = 224, max_pixels: int = 50_000_000
) -> np.ndarray:
    """The frame of the input's video at `inp["t"]` seconds, resized (short side `resize`) and
    center-cropped (`crop` x `crop`) as `decode_resize_crop` does images: a C-contiguous
    uint8 array of shape (crop, crop, 3).

    Raises ItemError for a missing or unreadable video, frames over `max_pixels`, a frame
    that cannot be decoded, or a t past the video's end.
    """
    if crop > resize:
        raise ValueError(f"crop ({crop}) must not exceed resize ({resize})")
    return resize_crop(frame_image(inp, max_pixels), resize, crop)


def frame_image(inp: dict[str, Any], max_pixels: int = 50_000_000) -> Image.Image:
    """The frame of the input's video at `inp["t"]` seconds, upright, as a whole RGB image (for
    stages that need every pixel, not a crop). Raises ItemError as `frame_at` does."""
    t = _frame_time(inp)
    with _open_source(inp) as file:
        img = _decode_at(file, t, max_pixels)
    return img.convert("RGB")
