"""`video` inputs: a `video_path` under the data root or an uploaded file, probed here and
expanded into one item per frame time (a group: one output per video)."""

from __future__ import annotations

import io
from typing import Any

from services.api.input_models import Interval, VideoInput, VideoOptions
from services.api.inputs.common import (
    MULTIPART_OPTIONS_FIELD,
    Limits,
    ParsedInput,
    Upload,
    invalid,
    resolve_data_path,
)
from shared import video


def _frame_times(
    info: video.VideoInfo,
    options: VideoInput | VideoOptions,
    options_field: str,
    room: int,
    limits: Limits,
    label: str = "",
) -> list[float]:
    """The frame times of a probed video: start, start + 1/fps, ... before the interval's end
    (default: the video's) and the video's end; 422 (naming `options_field`.interval or .fps,
    the message starting with `label`) when there are none or too many."""
    interval = options.interval or Interval()
    start, end, fps = interval.start, interval.end, options.fps
    length = info.duration_s
    if length is None and end is None:
        raise invalid(
            f"{options_field}.interval", f"{label}the video does not say how long it is; give interval.end"
        )
    if length is not None and start >= length:
        raise invalid(
            f"{options_field}.interval",
            f"{label}interval starts at {start:g} s, at or after the video's end ({length:.3f} s)",
        )
    stop = min(x for x in (end, length) if x is not None)
    count = video.frame_count(start, stop, fps)
    if count == 0:
        raise invalid(f"{options_field}.interval", f"{label}no frame time falls in the interval")
    if count > room:
        raise invalid(
            f"{options_field}.fps",
            f"{label}{count} frames ({stop - start:.3f} s at {fps:g} fps), more than this job can take "
            f"(at most {limits.max_inputs} inputs per job, each frame counts): lower fps or shorten "
            "the interval",
        )
    return video.frame_times(start, stop, fps)


def _probe(file: Any, field: str) -> video.VideoInfo:
    try:
        return video.probe(file)
    except video.VideoError as exc:
        raise invalid(field, f"not a readable video ({exc})") from None


def _frames_input(
    base: dict[str, Any], times: list[float], source: str | None, blob: bytes | None = None
) -> ParsedInput:
    return ParsedInput(
        base,
        source=source,
        items=[{**base, "t": t} for t in times],
        keys=[video.frame_key(t) for t in times],
        field=video.FRAMES_FIELD,
        blob=blob,
    )


def _video_from_json(item: VideoInput, field: str, limits: Limits, room: int) -> list[ParsedInput]:
    """A `video_path` under the data root: probed here, read again by the worker per frame."""
    path_field = f"{field}.video_path"
    full, rel = resolve_data_path(item.video_path, path_field, limits)
    if not full.is_file():
        raise invalid(path_field, "not a file (video_path names one video file)")
    try:
        with open(full, "rb") as handle:
            info = _probe(handle, path_field)
    except OSError as exc:
        raise invalid(path_field, f"cannot read the file ({exc.strerror or type(exc).__name__})") from None
    times = _frame_times(info, item, field, room, limits)
    return [_frames_input({"video_path": rel}, times, rel)]


def _video_from_upload(upload: Upload, field: str, limits: Limits, room: int) -> ParsedInput:
    """An uploaded video: probed here, stored once for the job; its frames read it (as "blob")."""
    info = _probe(io.BytesIO(upload.data), field)
    options = upload.options if isinstance(upload.options, VideoOptions) else VideoOptions()
    times = _frame_times(info, options, MULTIPART_OPTIONS_FIELD, room, limits, label=f"{field}: ")
    return _frames_input({}, times, upload.filename, blob=upload.data)
