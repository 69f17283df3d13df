"""Turn a job request (JSON or multipart) into the normalised inputs a pipeline's stages get.

Each input kind has one `InputFormat` in `INPUT_FORMATS`: the JSON fields of one input,
how they become normalised inputs and, when files may be uploaded, how one uploaded file
does. A new kind adds its model and functions here; nothing else in the API changes.

An `image` input becomes {"image": <bytes>} (base64 or an upload), {"image_url": <url>}
(only its syntax is checked here: the preprocess worker fetches it) or {"path": <path
relative to the data root>} (checked here, read by the worker; a folder becomes one input
per image in it). Each input may carry a `source` (file name, path or URL) that the job
keeps and each output shows.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData, UploadFile

from services.api.errors import describe_validation_errors
from services.api.schemas import ImageInput, TextInput
from shared import datapaths
from shared.errors import InvalidRequest
from shared.pipeline_spec import InputKind, PipelineSpec

MULTIPART_FILES_FIELD = "files"
MAX_WEBHOOK_CHARS = 2048
MAX_URL_CHARS = 2048
MAX_SOURCE_CHARS = 1024
MAX_METADATA_BYTES = 64 * 1024
_DATA_URL = re.compile(r"^data:[\w.+-]+/[\w.+-]+(?:;[\w.+-]+=[\w.+-]+)*;base64,", re.IGNORECASE)
_JSON_FIELDS = ("inputs", "webhook", "metadata")


@dataclass(frozen=True)
class Limits:
    max_inputs: int
    max_input_bytes: int
    data_root: Path | None = None  # where `path` inputs may point (None: they are refused)


@dataclass(frozen=True)
class ParsedInput:
    """One normalised input, and where it came from (shown in its output), if it has a name."""

    value: dict[str, Any]
    source: str | None = None


@dataclass(frozen=True)
class ParsedJob:
    inputs: list[dict[str, Any]]
    webhook: str | None
    metadata: dict[str, Any] | None
    sources: list[str | None] = dataclass_field(default_factory=list)  # one per input, or empty: none


# (validated model, field path, limits, inputs the job may still take) -> the inputs it stands for
FromJson = Callable[[Any, str, Limits, int], list[ParsedInput]]


@dataclass(frozen=True)
class InputFormat:
    """How requests carry the inputs of one input kind."""

    json_model: type[BaseModel]  # one element of `inputs` in a JSON body
    from_json: FromJson
    from_file: Callable[[bytes, str, Limits], dict[str, Any]] | None  # (one uploaded file, field, limits)

    @property
    def json_fields(self) -> list[str]:
        return list(self.json_model.model_fields)


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


INPUT_FORMATS: dict[InputKind, InputFormat] = {
    InputKind.image: InputFormat(json_model=ImageInput, from_json=_image_from_json, from_file=_image_from_file),
    InputKind.text: InputFormat(json_model=TextInput, from_json=_text_from_json, from_file=_text_from_file),
}


def input_format(kind: InputKind) -> InputFormat:
    try:
        return INPUT_FORMATS[kind]
    except KeyError:
        raise InvalidRequest(f"input kind {kind.value!r} is not supported by this API", field="inputs") from None


def check_webhook(value: Any, field: str = "webhook") -> str | None:
    if value is None or value == "":
        return None
    return check_http_url(value, field, MAX_WEBHOOK_CHARS)


def check_metadata(value: Any, field: str = "metadata") -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise invalid(field, "must be a JSON object")
    if len(json.dumps(value, separators=(",", ":"))) > MAX_METADATA_BYTES:
        raise invalid(field, f"larger than {MAX_METADATA_BYTES} bytes as JSON")
    return value


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
    webhook = check_webhook(data.get("webhook"))
    metadata = check_metadata(data.get("metadata"))
    fmt = input_format(pipeline.input)
    parsed: list[ParsedInput] = []
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
        room = limits.max_inputs - len(parsed) - (len(raw_inputs) - index - 1)
        parsed.extend(fmt.from_json(item, where, limits, room))
    _check_count(len(parsed), "inputs", limits)
    return _job(parsed, webhook, metadata)


def _job(parsed: list[ParsedInput], webhook: str | None, metadata: dict[str, Any] | None) -> ParsedJob:
    sources = [p.source for p in parsed]
    return ParsedJob(
        inputs=[p.value for p in parsed],
        webhook=webhook,
        metadata=metadata,
        sources=sources if any(s is not None for s in sources) else [],
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
    """A multipart job request: files in `files` (one per input), optional `webhook`, `metadata`."""
    fmt = input_format(pipeline.input)
    if fmt.from_file is None:
        raise invalid(MULTIPART_FILES_FIELD, f"pipeline {pipeline.name!r} takes JSON inputs only")
    allowed = {MULTIPART_FILES_FIELD, "webhook", "metadata"}
    unknown = sorted({key for key in form.keys() if key not in allowed})
    if unknown:
        raise invalid(unknown[0], f"unknown form field (accepted: {', '.join(sorted(allowed))})")
    uploads = form.getlist(MULTIPART_FILES_FIELD)
    _check_count(len(uploads), MULTIPART_FILES_FIELD, limits)
    webhook = check_webhook(_single_text(form, "webhook"))
    metadata_text = _single_text(form, "metadata")
    metadata = None
    if metadata_text is not None and metadata_text.strip():
        try:
            metadata = json.loads(metadata_text)
        except ValueError as exc:
            raise invalid("metadata", f"not valid JSON ({exc})") from None
        metadata = check_metadata(metadata)
    parsed: list[ParsedInput] = []
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
        parsed.append(ParsedInput(fmt.from_file(data, where, limits), source=source))
    return _job(parsed, webhook, metadata)
