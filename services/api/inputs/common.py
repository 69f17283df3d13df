"""What every input kind shares: request limits, the parsed forms of inputs and jobs, the
`InputFormat` an input kind registers, and the field checks they use (base64, http URLs)."""

from __future__ import annotations

import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pybase64
from pydantic import BaseModel

from services.api import formats
from shared import datapaths
from shared.errors import InvalidRequest
from shared.job_record import InputGroup
from shared.priority import DEFAULT as DEFAULT_PRIORITY
from shared.priority import Priority

MULTIPART_FILES_FIELD = "files"
MULTIPART_OPTIONS_FIELD = "options"
MAX_SOURCE_CHARS = 1024
MAX_METADATA_BYTES = 64 * 1024
MAX_METADATA_DEPTH = 32  # levels of nesting (the JSON renderers give up at 255)
_DATA_URL = re.compile(formats.DATA_URL_PREFIX)
KEEP_INPUTS_FIELD = "keep_inputs"
_JSON_FIELDS = ("inputs", "webhook", "webhook_events", "metadata", "timeout_s", KEEP_INPUTS_FIELD, "priority")
WEBHOOK_EVENTS_FIELD = "webhook_events"
TIMEOUT_FIELD = "timeout_s"
PRIORITY_FIELD = "priority"


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
    priority: Priority = DEFAULT_PRIORITY  # which streams its items take at every stage
    digest: str | None = None  # SHA-256 of the request as parsed (asked for with an Idempotency-Key)
    keep_inputs: bool | None = None  # `keep_inputs` as asked (None: the server's DLPIPE_KEEP_INPUTS)
    # Per input, what keep_inputs keeps (shared/jobs.py Kept): bytes, a blob's number, or None
    originals: list[bytes | int | None] = dataclass_field(default_factory=list)


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
    """Strict base64 (formats.BASE64: padded, no line breaks; an optional data URL prefix), at
    most `max_bytes` once decoded. pybase64's strict decoding admits exactly the payloads the
    pattern does (tests/unit/test_api_formats.py), at ~50x the stdlib's speed; the pattern itself
    would cost ~10 ms on a photo's base64, so only the short prefix goes through a regex."""
    payload = _DATA_URL.sub("", text, count=1)
    if not payload:
        raise invalid(field, "empty input")
    if len(payload) > 4 * -(-max_bytes // 3):  # longer than any encoding of max_bytes
        raise invalid(field, f"input is larger than {max_bytes} bytes")
    try:
        data = pybase64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise invalid(field, "not valid base64") from None
    if len(data) > max_bytes:
        raise invalid(field, f"input is larger than {max_bytes} bytes")
    return data


def check_http_url(value: Any, field: str, max_chars: int, *, credentials: bool = True) -> str:
    """An absolute http(s) URL with a host, in RFC 3986 characters (formats.HTTP_URL; syntax
    only: nothing is resolved or fetched)."""
    if not isinstance(value, str):
        raise invalid(field, "must be an http(s) URL string")
    if len(value) > max_chars:
        raise invalid(field, f"longer than {max_chars} characters")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in value):
        raise invalid(field, "URL contains whitespace or control characters")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise invalid(field, "not a valid URL") from None
    if parts.scheme not in ("http", "https"):
        raise invalid(field, "must be an http or https URL")
    if not parts.hostname:
        raise invalid(field, "URL has no host")
    if not credentials and (parts.username is not None or parts.password is not None):
        raise invalid(field, "credentials in the URL are not accepted")
    if not formats.matches(formats.HTTP_URL, value):
        raise invalid(
            field, "not a valid URL (RFC 3986 characters only: percent-encode others, e.g. %C3%A9 for é)"
        )
    return value


def resolve_data_path(value: str, field: str, limits: Limits) -> tuple[Path, str]:
    """A `path` or `video_path` input: not blank, no NUL (formats.DATA_PATH), an existing file
    or folder under the data root; (its resolved path, its path relative to the root)."""
    if limits.data_root is not None and not formats.matches(formats.DATA_PATH, value):
        raise invalid(field, "empty path (or only whitespace), or a NUL character in it")
    try:
        return datapaths.resolve_under(limits.data_root, value)
    except datapaths.PathRefused as exc:
        raise invalid(field, str(exc)) from None
