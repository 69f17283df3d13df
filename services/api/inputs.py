"""Turn a job request (JSON or multipart) into the normalised inputs a pipeline's stages get.

Each input kind has one `InputFormat` in `INPUT_FORMATS`: the JSON fields of one input,
how they become normalised inputs and, when files may be uploaded, how one uploaded file
does. A new kind adds its model and functions here; nothing else in the API changes.

An `image` input becomes {"image": <bytes>} (base64 or an upload), {"image_url": <url>}
(only its syntax is checked here: the preprocess worker fetches it) or {"path": <path
relative to the data root>} (checked here, read by the worker; a folder becomes one input
per image in it). Each input may carry a `source` (file name, path or URL) that the job
keeps and each output shows.

A `video` input ({"video_path": ..., "interval": ..., "fps": ...} or an uploaded file, with
the form field `options` holding {"interval": ..., "fps": ...} as JSON) is probed here
(shared/video.py: a readable container with a video stream, and its length) and becomes
one item per frame time, {"video_path": <rel>, "t": <s>} or {"t": <s>} reading the upload,
which is stored once for the job (a job blob). The items form one group: the job shows
one output per video, `{"frames": {"0.500": <that frame's result>, ...}}`. Every frame
counts toward the job's limit of inputs.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile

from services.api.errors import describe_validation_errors
from services.api.schemas import ImageInput, Interval, TextInput, VideoInput, VideoOptions
from shared import datapaths, netguard, video
from shared.errors import InvalidRequest
from shared.jobs import InputGroup
from shared.messages import WEBHOOK_EVENT_NAMES
from shared.pipeline_spec import InputKind, PipelineSpec

MULTIPART_FILES_FIELD = "files"
MULTIPART_OPTIONS_FIELD = "options"
MAX_WEBHOOK_CHARS = 2048
MAX_URL_CHARS = 2048
MAX_SOURCE_CHARS = 1024
MAX_METADATA_BYTES = 64 * 1024
_DATA_URL = re.compile(r"^data:[\w.+-]+/[\w.+-]+(?:;[\w.+-]+=[\w.+-]+)*;base64,", re.IGNORECASE)
_JSON_FIELDS = ("inputs", "webhook", "webhook_events", "metadata", "timeout_s")
WEBHOOK_EVENTS_FIELD = "webhook_events"
TIMEOUT_FIELD = "timeout_s"


@dataclass(frozen=True)
class Limits:
    max_inputs: int
    max_input_bytes: int
    data_root: Path | None = None  # where `path` inputs may point (None: they are refused)
    max_timeout_s: float = 86400.0  # the longest `timeout_s` a job may ask for (the job TTL)
    webhook_allow_private: bool = False  # DLPIPE_WEBHOOK_ALLOW_PRIVATE: internal webhook addresses allowed


@dataclass(frozen=True)
class ParsedInput:
    """One normalised input, and where it came from (shown in its output), if it has a name.

    An input that runs as several items (a video: one per frame) gives their inputs in
    `items`, the keys their results go under in the input's one output (`keys`) and the
    result field that holds them (`field`); `value` is then what they share. `blob` is
    stored once for the job and read by each of the input's items (as "blob").
    """

    value: dict[str, Any]
    source: str | None = None
    items: list[dict[str, Any]] | None = None
    keys: list[str] | None = None
    field: str = "items"
    blob: bytes | None = None

    @property
    def count(self) -> int:
        """How many items (of the job's max_inputs) it takes."""
        return len(self.items) if self.items is not None else 1


@dataclass(frozen=True)
class ParsedJob:
    inputs: list[dict[str, Any]]  # one per item
    webhook: str | None
    metadata: dict[str, Any] | None
    sources: list[str | None] = dataclass_field(default_factory=list)  # one per input, or empty: none
    groups: list[InputGroup] = dataclass_field(default_factory=list)  # inputs of several items
    blobs: list[bytes] = dataclass_field(default_factory=list)  # stored once each (job blobs)
    item_blobs: list[int | None] = dataclass_field(default_factory=list)  # per item, or empty: none
    webhook_events: list[str] = dataclass_field(default_factory=list)  # empty: the default (completed)
    timeout_s: float | None = None  # the job's deadline, from its creation (None: none)


@dataclass(frozen=True)
class Upload:
    """One uploaded file of a multipart request, with the request's validated `options`."""

    data: bytes
    filename: str | None
    options: BaseModel | None = None


# (validated model, field path, limits, inputs the job may still take) -> the inputs it stands for
FromJson = Callable[[Any, str, Limits, int], list[ParsedInput]]
# (one uploaded file, field path, limits, inputs the job may still take) -> the input it stands for
FromUpload = Callable[[Upload, str, Limits, int], ParsedInput]


@dataclass(frozen=True)
class InputFormat:
    """How requests carry the inputs of one input kind.

    Uploads go through `from_upload` when it is set (it sees the file's name, the request's
    `options` and the room left), else through `from_file` (the bytes alone: one item).
    """

    json_model: type[BaseModel]  # one element of `inputs` in a JSON body
    from_json: FromJson
    from_file: Callable[[bytes, str, Limits], dict[str, Any]] | None  # (one uploaded file, field, limits)
    from_upload: FromUpload | None = None
    options_model: type[BaseModel] | None = None  # the multipart `options` field (JSON text), if taken

    @property
    def json_fields(self) -> list[str]:
        return list(self.json_model.model_fields)

    @property
    def takes_files(self) -> bool:
        return self.from_upload is not None or self.from_file is not None

    def upload(self, upload: Upload, field: str, limits: Limits, room: int) -> ParsedInput:
        if self.from_upload is not None:
            return self.from_upload(upload, field, limits, room)
        assert self.from_file is not None
        return ParsedInput(self.from_file(upload.data, field, limits), source=upload.filename)


def invalid(field: str, message: str) -> InvalidRequest:
    return InvalidRequest(f"{field}: {message}", field=field)


def decode_base64(text: str, field: str, max_bytes: int) -> bytes:
    """Strict base64 (an optional data URL prefix aside), at most `max_bytes` once decoded."""
    text = _DATA_URL.sub("", text, count=1)
    if len(text) > 4 * -(-max_bytes // 3):  # longer than any encoding of max_bytes
        raise invalid(field, f"input is larger than {max_bytes} bytes")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise invalid(field, "not valid base64") from None
    if not data:
        raise invalid(field, "empty input")
    if len(data) > max_bytes:
        raise invalid(field, f"input is larger than {max_bytes} bytes")
    return data


def check_http_url(value: Any, field: str, max_chars: int, *, credentials: bool = True) -> str:
    """An absolute http(s) URL with a host (syntax only: nothing is resolved or fetched)."""
    if not isinstance(value, str):
        raise invalid(field, "must be an http(s) URL string")
    if len(value) > max_chars:
        raise invalid(field, f"longer than {max_chars} characters")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in value):
        raise invalid(field, "URL contains whitespace or control characters")
    try:
        parts = urlsplit(value)
        hostname = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise invalid(field, "not a valid URL") from None
    if parts.scheme not in ("http", "https"):
        raise invalid(field, "must be an http or https URL")
    if not hostname:
        raise invalid(field, "URL has no host")
    if not credentials and (parts.username is not None or parts.password is not None):
        raise invalid(field, "credentials in the URL are not accepted")
    return value


def expand_path(value: str, field: str, limits: Limits, room: int) -> list[ParsedInput]:
    """A `path` input: one input for a file, one per image for a folder (at most `room`)."""
    try:
        full, rel = datapaths.resolve_under(limits.data_root, value)
    except datapaths.PathRefused as exc:
        raise invalid(field, str(exc)) from None
    if full.is_file():
        return [ParsedInput({"path": rel}, source=rel)]
    if not full.is_dir():
        raise invalid(field, "neither a file nor a folder")
    assert limits.data_root is not None  # resolve_under refuses paths without a root
    try:
        found = datapaths.list_images(limits.data_root, rel, room)
    except datapaths.PathRefused as exc:
        raise invalid(field, str(exc)) from None
    if not found:
        kinds = ", ".join(ext.lstrip(".") for ext in datapaths.IMAGE_EXTENSIONS)
        raise invalid(field, f"the folder holds no images ({kinds}; subfolders are not read)")
    if len(found) > room:
        raise invalid(
            field,
            f"the folder holds more images than this job can take (at most {limits.max_inputs} inputs per job)",
        )
    return [ParsedInput({"path": name}, source=name) for name in found]


def _image_from_json(item: ImageInput, field: str, limits: Limits, room: int) -> list[ParsedInput]:
    if item.image_url is not None:
        url = check_http_url(item.image_url, f"{field}.image_url", MAX_URL_CHARS, credentials=False)
        return [ParsedInput({"image_url": url}, source=url)]
    if item.path is not None:
        return expand_path(item.path, f"{field}.path", limits, room)
    assert item.image_base64 is not None  # the model takes exactly one of the three
    data = decode_base64(item.image_base64, f"{field}.image_base64", limits.max_input_bytes)
    return [ParsedInput({"image": data})]


def _image_from_file(data: bytes, field: str, limits: Limits) -> dict[str, Any]:
    return {"image": data}


def check_text(text: str, field: str, max_bytes: int) -> str:
    """Text that is not blank and at most `max_bytes` once UTF-8 encoded."""
    if not text.strip():
        raise invalid(field, "empty text (or only whitespace)")
    if len(text) > max_bytes:  # every character is at least one byte: no need to encode
        raise invalid(field, f"text is larger than {max_bytes} bytes in UTF-8")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:  # JSON allows lone surrogates ("\ud800"); UTF-8 does not
        raise invalid(field, f"not valid Unicode text (lone surrogate at character {exc.start})") from None
    if size > max_bytes:
        raise invalid(field, f"text is larger than {max_bytes} bytes in UTF-8")
    return text


def _text_from_json(item: TextInput, field: str, limits: Limits, room: int) -> list[ParsedInput]:
    return [ParsedInput({"text": check_text(item.text, f"{field}.text", limits.max_input_bytes)})]


def _text_from_file(data: bytes, field: str, limits: Limits) -> dict[str, Any]:
    """An uploaded text file (text/plain): its UTF-8 text, a leading byte-order mark dropped."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise invalid(field, f"not valid UTF-8 text (bad byte at offset {exc.start})") from None
    return {"text": check_text(text, field, limits.max_input_bytes)}


def _frame_times(
    info: video.VideoInfo, options: VideoInput | VideoOptions, options_field: str, room: int, limits: Limits,
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
    try:
        full, rel = datapaths.resolve_under(limits.data_root, item.video_path)
    except datapaths.PathRefused as exc:
        raise invalid(path_field, str(exc)) from None
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


INPUT_FORMATS: dict[InputKind, InputFormat] = {
    InputKind.image: InputFormat(json_model=ImageInput, from_json=_image_from_json, from_file=_image_from_file),
    InputKind.text: InputFormat(json_model=TextInput, from_json=_text_from_json, from_file=_text_from_file),
    InputKind.video: InputFormat(
        json_model=VideoInput, from_json=_video_from_json, from_file=None, from_upload=_video_from_upload,
        options_model=VideoOptions,
    ),  # fmt: skip
}


def input_format(kind: InputKind) -> InputFormat:
    try:
        return INPUT_FORMATS[kind]
    except KeyError:
        raise InvalidRequest(f"input kind {kind.value!r} is not supported by this API", field="inputs") from None


def check_webhook(value: Any, field: str = "webhook", *, allow_private: bool = False) -> str | None:
    """An http(s) URL. A host that is an IP address in any spelling (`127.1`, `0x7f000001`,
    `[::ffff:10.0.0.1]`) or `localhost` is checked here against the SSRF guard; names are
    resolved and checked by the notifier at each attempt."""
    if value is None or value == "":
        return None
    url = check_http_url(value, field, MAX_WEBHOOK_CHARS)
    host = urlsplit(url).hostname or ""
    if allow_private:
        return url
    if host == "localhost" or host.endswith(".localhost"):
        allow = f"{WEBHOOK_POLICY.override}=true allows it"
        raise invalid(field, f"{host} is a loopback name, which is refused ({allow})")
    try:
        literal = netguard.parse_literal(host)
        if literal is not None:
            netguard.check_address(literal, host, WEBHOOK_POLICY)
    except netguard.AddressRefused as exc:
        raise invalid(field, str(exc)) from None
    except ValueError as exc:
        raise invalid(field, str(exc)) from None
    return url


WEBHOOK_POLICY = netguard.AddressPolicy(override="DLPIPE_WEBHOOK_ALLOW_PRIVATE")


def check_webhook_events(value: Any, webhook: str | None, field: str = WEBHOOK_EVENTS_FIELD) -> list[str]:
    """`webhook_events`: a list of "started", "progress", "completed"; None: the default
    (["completed"], stored as an empty list here). Needs a webhook."""
    if value is None:
        return []
    if not isinstance(value, list) or not value:
        raise invalid(field, f"must be a non-empty list of {', '.join(WEBHOOK_EVENT_NAMES)}")
    for index, name in enumerate(value):
        if name not in WEBHOOK_EVENT_NAMES:
            choices = ", ".join(WEBHOOK_EVENT_NAMES)
            raise invalid(f"{field}[{index}]", f"{name!r} is not an event (choose from {choices})")
    if webhook is None:
        raise invalid(field, "given without a webhook")
    return [name for name in WEBHOOK_EVENT_NAMES if name in value]


def check_metadata(value: Any, field: str = "metadata") -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise invalid(field, "must be a JSON object")
    if len(json.dumps(value, separators=(",", ":"))) > MAX_METADATA_BYTES:
        raise invalid(field, f"larger than {MAX_METADATA_BYTES} bytes as JSON")
    return value


def check_timeout(value: Any, limits: Limits, field: str = TIMEOUT_FIELD) -> float | None:
    """`timeout_s`: seconds (> 0, at most the job TTL) after which the job's unfinished items
    fail as expired; None: no deadline. A multipart field gives it as text."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise invalid(field, f"must be a number of seconds, got {value[:40]!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise invalid(field, "must be a number of seconds")
    if not math.isfinite(value) or value <= 0:
        raise invalid(field, f"must be more than 0 seconds, got {value}")
    if value > limits.max_timeout_s:
        raise invalid(field, f"at most {limits.max_timeout_s:g} seconds (the job TTL), got {value:g}")
    return float(value)


def _check_count(count: int, field: str, limits: Limits) -> None:
    if count == 0:
        raise invalid(field, "must hold at least one input")
    if count > limits.max_inputs:
        raise invalid(field, f"{count} inputs, at most {limits.max_inputs} per job")


def parse_json_body(body: bytes, pipeline: PipelineSpec, limits: Limits) -> ParsedJob:
    """A JSON job request: {"inputs": [...], "webhook": ..., "metadata": {...}}."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise invalid("body", f"not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise invalid("body", "must be a JSON object with `inputs`")
    unknown = sorted(set(data) - set(_JSON_FIELDS))
    if unknown:
        raise invalid(unknown[0], f"unknown field (accepted: {', '.join(_JSON_FIELDS)})")
    raw_inputs = data.get("inputs")
    if not isinstance(raw_inputs, list):
        raise invalid("inputs", "required, a list of inputs")
    _check_count(len(raw_inputs), "inputs", limits)
    webhook = check_webhook(data.get("webhook"), allow_private=limits.webhook_allow_private)
    events = check_webhook_events(data.get(WEBHOOK_EVENTS_FIELD), webhook)
    metadata = check_metadata(data.get("metadata"))
    timeout_s = check_timeout(data.get(TIMEOUT_FIELD), limits)
    fmt = input_format(pipeline.input)
    parsed: list[ParsedInput] = []
    taken = 0  # items so far (a video takes one per frame)
    for index, raw in enumerate(raw_inputs):
        where = f"inputs[{index}]"
        if not isinstance(raw, dict):
            raise invalid(where, f"must be an object with {', '.join(fmt.json_fields)}")
        try:
            item = fmt.json_model.model_validate(raw)
        except ValidationError as exc:
            message, first = describe_validation_errors(exc.errors(), prefix=where)
            raise InvalidRequest(message, field=first) from None
        # Room left: what the cap allows, less what is taken and what the inputs still to come need.
        room = limits.max_inputs - taken - (len(raw_inputs) - index - 1)
        new = fmt.from_json(item, where, limits, room)
        taken += sum(p.count for p in new)
        parsed.extend(new)
    _check_count(taken, "inputs", limits)
    return replace(_job(parsed, webhook, metadata), webhook_events=events, timeout_s=timeout_s)


def _job(parsed: list[ParsedInput], webhook: str | None, metadata: dict[str, Any] | None) -> ParsedJob:
    """The job's items: an input of several items becomes a group of them; blobs are listed once."""
    inputs: list[dict[str, Any]] = []
    groups: list[InputGroup] = []
    blobs: list[bytes] = []
    item_blobs: list[int | None] = []
    for p in parsed:
        blob = None
        if p.blob is not None:
            blob = len(blobs)
            blobs.append(p.blob)
        if p.items is None:
            inputs.append(p.value)
        else:
            groups.append(InputGroup(first=len(inputs), keys=list(p.keys or []), field=p.field))
            inputs.extend(p.items)
        item_blobs.extend([blob] * p.count)
    sources = [p.source for p in parsed]
    return ParsedJob(
        inputs=inputs,
        webhook=webhook,
        metadata=metadata,
        sources=sources if any(s is not None for s in sources) else [],
        groups=groups,
        blobs=blobs,
        item_blobs=item_blobs if blobs else [],
    )


def _single_text(form: FormData, name: str) -> str | None:
    values = form.getlist(name)
    if len(values) > 1:
        raise invalid(name, "given more than once")
    if not values:
        return None
    if not isinstance(values[0], str):
        raise invalid(name, "must be a text field, not a file")
    return values[0]


async def parse_form(form: FormData, pipeline: PipelineSpec, limits: Limits) -> ParsedJob:
    """A multipart job request: files in `files` (one per input), optional `webhook`, `metadata`
    and, for kinds that take them (video), `options` (JSON text, for every file)."""
    fmt = input_format(pipeline.input)
    if not fmt.takes_files:
        raise invalid(MULTIPART_FILES_FIELD, f"pipeline {pipeline.name!r} takes JSON inputs only")
    allowed = {MULTIPART_FILES_FIELD, "webhook", WEBHOOK_EVENTS_FIELD, "metadata", TIMEOUT_FIELD}
    if fmt.options_model is not None:
        allowed.add(MULTIPART_OPTIONS_FIELD)
    unknown = sorted({key for key in form.keys() if key not in allowed})
    if unknown:
        raise invalid(unknown[0], f"unknown form field (accepted: {', '.join(sorted(allowed))})")
    uploads = form.getlist(MULTIPART_FILES_FIELD)
    _check_count(len(uploads), MULTIPART_FILES_FIELD, limits)
    webhook = check_webhook(_single_text(form, "webhook"), allow_private=limits.webhook_allow_private)
    event_texts = form.getlist(WEBHOOK_EVENTS_FIELD)
    if any(not isinstance(t, str) for t in event_texts):
        raise invalid(WEBHOOK_EVENTS_FIELD, "must be a text field, not a file")
    # One field, comma-separated ("started,completed"), or the field repeated.
    names = [part.strip() for text in event_texts for part in str(text).split(",") if part.strip()]
    events = check_webhook_events(names if event_texts else None, webhook)
    metadata_text = _single_text(form, "metadata")
    metadata = None
    if metadata_text is not None and metadata_text.strip():
        try:
            metadata = json.loads(metadata_text)
        except ValueError as exc:
            raise invalid("metadata", f"not valid JSON ({exc})") from None
        metadata = check_metadata(metadata)
    timeout_s = check_timeout(_single_text(form, TIMEOUT_FIELD), limits)
    options = _form_options(form, fmt)
    parsed: list[ParsedInput] = []
    taken = 0
    for index, upload in enumerate(uploads):
        where = f"{MULTIPART_FILES_FIELD}[{index}]"
        if not isinstance(upload, UploadFile):
            raise invalid(where, "must be a file upload (filename and content), not a text field")
        if upload.size is not None and upload.size > limits.max_input_bytes:
            raise invalid(where, f"input is larger than {limits.max_input_bytes} bytes")
        data = await upload.read(limits.max_input_bytes + 1)
        if len(data) > limits.max_input_bytes:
            raise invalid(where, f"input is larger than {limits.max_input_bytes} bytes")
        if not data:
            raise invalid(where, "empty file")
        source = upload.filename[:MAX_SOURCE_CHARS] if upload.filename else None
        room = limits.max_inputs - taken - (len(uploads) - index - 1)
        # In a thread: probing a video (or decoding a large text) must not hold up the event loop.
        one = await run_in_threadpool(fmt.upload, Upload(data, source, options), where, limits, room)
        taken += one.count
        parsed.append(one)
    return replace(_job(parsed, webhook, metadata), webhook_events=events, timeout_s=timeout_s)


def _form_options(form: FormData, fmt: InputFormat) -> BaseModel | None:
    """The `options` form field, validated by the input kind's options model (absent: its defaults)."""
    if fmt.options_model is None:
        return None
    text = _single_text(form, MULTIPART_OPTIONS_FIELD)
    if text is None or not text.strip():
        return fmt.options_model()
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise invalid(MULTIPART_OPTIONS_FIELD, f"not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise invalid(MULTIPART_OPTIONS_FIELD, "must be a JSON object")
    try:
        return fmt.options_model.model_validate(data)
    except ValidationError as exc:
        message, first = describe_validation_errors(exc.errors(), prefix=MULTIPART_OPTIONS_FIELD)
        raise InvalidRequest(message, field=first) from None
