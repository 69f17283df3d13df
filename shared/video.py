"""Video inputs, for the API (probe, frame times) and the workers (open a container).

A video input stands for one item per frame time: start, start + 1/fps, ... while the time
is before the interval's end (exclusive) and before the video's end. Each frame's result
is keyed by its time in seconds with three decimals ("0.500"), as `frame_key` writes it.

Only a few containers are opened, each with its demuxer named explicitly: MP4/MOV (ISO
base media), Matroska/WebM and AVI, recognised from their first bytes. FFmpeg is never
left to guess the format from untrusted bytes: some demuxers it would pick (HLS
playlists, concat lists) open further files or URLs named inside the data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, BinaryIO

import av

MAX_FPS = 30.0
DEFAULT_FPS = 1.0
FRAMES_FIELD = "frames"  # a video's result: {"frames": {frame_key: item result}, "errors": {...}}
CONTAINERS = "MP4/MOV, Matroska/WebM or AVI"
_ISO_BOXES = {b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"}
_EPSILON = 1e-9


class VideoError(ValueError):
    """Bytes or a file that cannot be read as a video; the message says why."""


def frame_key(t: float) -> str:
    """A frame time as results key it: seconds with three decimals ("2.500")."""
    return f"{t:.3f}"


def frame_count(start: float, stop: float, fps: float) -> int:
    """How many of start, start + 1/fps, ... lie before `stop`."""
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return max(0, math.ceil((stop - start) * fps - _EPSILON))


def frame_times(start: float, stop: float, fps: float) -> list[float]:
    """start, start + 1/fps, ... before `stop` (exclusive); each computed, not accumulated."""
    return [round(start + i / fps, 6) for i in range(frame_count(start, stop, fps))]


def sniff_format(head: bytes) -> str | None:
    """The demuxer for a file starting with `head` (16 bytes will do), or None: not one we open."""
    if len(head) >= 8 and head[4:8] in _ISO_BOXES:
        return "mov"  # FFmpeg's "mov,mp4,m4a,3gp,3g2,mj2"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska"  # "matroska,webm"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    return None


def open_container(file: BinaryIO) -> Any:
    """Open a seekable binary file object as a video container (an av InputContainer).

    Raises VideoError for a format we do not open or data FFmpeg cannot parse.
    """
    head = file.read(16)
    file.seek(0)
    fmt = sniff_format(head)
    if fmt is None:
        raise VideoError(f"not a supported video container ({CONTAINERS})")
    try:
        return av.open(file, mode="r", format=fmt)
    except av.FFmpegError as exc:
        raise VideoError(f"cannot open it as {fmt}: {ffmpeg_reason(exc)}") from None
    except Exception as exc:  # a malformed file can raise nearly anything while being parsed
        raise VideoError(f"cannot open it as {fmt}: {type(exc).__name__}: {exc}") from None


def ffmpeg_reason(exc: Exception) -> str:
    """An FFmpeg error's own words ("Invalid data found when processing input"), no errno."""
    return str(getattr(exc, "strerror", None) or exc)


def video_stream(container: Any) -> Any:
    """The container's first video stream; VideoError if it has none."""
    if not container.streams.video:
        raise VideoError("it holds no video stream")
    return container.streams.video[0]


def duration_s(container: Any, stream: Any) -> float | None:
    """The video's length in seconds, from the stream (or else the container); None if unknown."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / av.time_base
    return None


@dataclass(frozen=True)
class VideoInfo:
    format: str
    codec: str
    width: int
    height: int
    duration_s: float | None  # None: the container does not say
    frame_rate: float | None


def probe(file: BinaryIO) -> VideoInfo:
    """Read a video's headers (no frame is decoded); VideoError if it is not a readable video."""
    container = open_container(file)
    try:
        stream = video_stream(container)
        codec = stream.codec_context
        if codec is None or not codec.width or not codec.height:
            raise VideoError("its video stream has no decodable picture size")
        rate = stream.average_rate or stream.guessed_rate
        return VideoInfo(
            format=container.format.name,
            codec=codec.name,
            width=codec.width,
            height=codec.height,
            duration_s=duration_s(container, stream),
            frame_rate=float(rate) if rate else None,
        )
    finally:
        container.close()
