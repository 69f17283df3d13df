"""A whole job request, JSON body or multipart form, into a `ParsedJob`: the input kinds'
formats (`INPUT_FORMATS`), the count limits and the job-level fields."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile

from services.api.errors import describe_validation_errors
from services.api.input_models import ImageInput, TextInput, VideoInput, VideoOptions
from services.api.inputs.common import (
    _JSON_FIELDS,
    KEEP_INPUTS_FIELD,
    MAX_SOURCE_CHARS,
    MULTIPART_FILES_FIELD,
    MULTIPART_OPTIONS_FIELD,
    PRIORITY_FIELD,
    TIMEOUT_FIELD,
    WEBHOOK_EVENTS_FIELD,
    InputFormat,
    Limits,
    ParsedInput,
    ParsedJob,
    Upload,
    invalid,
)
from services.api.inputs.fields import (
    check_metadata,
    check_priority,
    check_timeout,
    check_webhook,
    check_webhook_events,
    timeout_from_text,
    webhook_events_from_texts,
)
from services.api.inputs.image import _image_from_file, _image_from_json
from services.api.inputs.jsonbody import gc_paused, load_json
from services.api.inputs.multipart import form_digest
from services.api.inputs.text import _text_from_file, _text_from_json
from services.api.inputs.video import _video_from_json, _video_from_upload
from shared.errors import InvalidRequest, cut
from shared.job_record import InputGroup
from shared.pipeline_spec import InputKind, PipelineSpec

INPUT_FORMATS: dict[InputKind, InputFormat] = {
    InputKind.image: InputFormat(
        json_model=ImageInput, from_json=_image_from_json, from_file=_image_from_file
    ),
    InputKind.text: InputFormat(json_model=TextInput, from_json=_text_from_json, from_file=_text_from_file),
    InputKind.video: InputFormat(
        json_model=VideoInput,
        from_json=_video_from_json,
        from_file=None,
        from_upload=_video_from_upload,
        options_model=VideoOptions,
    ),
}


def input_format(kind: InputKind) -> InputFormat:
    try:
        return INPUT_FORMATS[kind]
    except KeyError:
        raise InvalidRequest(
            f"input kind {kind.value!r} is not supported by this API", field="inputs"
        ) from None


def _check_count(count: int, field: str, limits: Limits) -> None:
    if count == 0:
        raise invalid(field, "must hold at least one input")
    if count > limits.max_inputs:
        raise invalid(field, f"{count} inputs, at most {limits.max_inputs} per job")


def parse_json_body(
    body: bytes, pipeline: PipelineSpec, limits: Limits, *, digest: bool = False
) -> ParsedJob:
    """A JSON job request: {"inputs": [...], "webhook": ..., "metadata": {...}}; with `digest`, its
    fingerprint too: the SHA-256 of its canonical JSON (keys sorted, no spaces), so the same request
    with other whitespace or key order is the same request."""
    data = load_json(body)
    if not isinstance(data, dict):
        raise invalid("body", "must be a JSON object with `inputs`")
    unknown = sorted(set(data) - set(_JSON_FIELDS))
    if unknown:
        raise invalid(cut(unknown[0]), f"unknown field (accepted: {', '.join(_JSON_FIELDS)})")
    raw_inputs = data.get("inputs")
    if not isinstance(raw_inputs, list):
        raise invalid("inputs", "required, a list of inputs")
    _check_count(len(raw_inputs), "inputs", limits)
    webhook = check_webhook(data.get("webhook"), allow_private=limits.webhook_allow_private)
    events = check_webhook_events(data.get(WEBHOOK_EVENTS_FIELD), webhook)
    metadata = check_metadata(data.get("metadata"))
    timeout_s = check_timeout(data.get(TIMEOUT_FIELD), limits)
    keep = data.get(KEEP_INPUTS_FIELD)
    if keep is not None and not isinstance(keep, bool):
        raise invalid(KEEP_INPUTS_FIELD, "must be true, false or null")
    priority = check_priority(data.get(PRIORITY_FIELD))
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
    job = replace(
        _job(parsed, webhook, metadata),
        webhook_events=events,
        timeout_s=timeout_s,
        keep_inputs=keep,
        priority=priority,
    )
    return replace(job, digest=_json_digest(data)) if digest else job


def parse_values(
    values: Sequence[bytes | BaseModel], pipeline: PipelineSpec, limits: Limits, field: str
) -> ParsedJob:
    """A job of inputs given one value each by another protocol (services/api/protocols): bytes
    go the way one uploaded file does, a model (the input kind's `json_model`) the way one JSON
    input does; errors name `field[i]`. Synchronous: an input kind that probes its uploads (video)
    belongs in a thread."""
    _check_count(len(values), field, limits)
    fmt = input_format(pipeline.input)
    parsed: list[ParsedInput] = []
    taken = 0
    for index, value in enumerate(values):
        where = f"{field}[{index}]"
        room = limits.max_inputs - taken - (len(values) - index - 1)
        if isinstance(value, bytes):
            if not fmt.takes_files:
                raise invalid(where, f"pipeline {pipeline.name!r} takes no encoded files")
            if not value:
                raise invalid(where, "empty input")
            if len(value) > limits.max_input_bytes:
                raise invalid(where, f"input is larger than {limits.max_input_bytes} bytes")
            new = [fmt.upload(Upload(value, None), where, limits, room)]
        else:
            new = fmt.from_json(value, where, limits, room)
        taken += sum(p.count for p in new)
        parsed.extend(new)
    _check_count(taken, field, limits)
    return _job(parsed, None, None)


def _json_digest(data: dict[str, Any]) -> str:
    with gc_paused():
        canonical = orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(b"json\0" + canonical).hexdigest()


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
        originals=[_original(p, n) for p, n in zip(parsed, _blob_numbers(parsed), strict=True)],
        inputs=inputs,
        webhook=webhook,
        metadata=metadata,
        sources=sources if any(s is not None for s in sources) else [],
        groups=groups,
        blobs=blobs,
        item_blobs=item_blobs if blobs else [],
    )


def _blob_numbers(parsed: list[ParsedInput]) -> list[int | None]:
    numbers, n = [], 0
    for p in parsed:
        numbers.append(n if p.blob is not None else None)
        n += p.blob is not None
    return numbers


def _original(p: ParsedInput, blob: int | None) -> bytes | int | None:
    """What `keep_inputs` keeps of one input: its uploaded blob's number, the bytes of an image
    sent inline or uploaded, a text as UTF-8; None for what names data elsewhere (URL, path)."""
    if blob is not None:
        return blob
    if p.items is None and isinstance(p.value.get("image"), bytes):
        return p.value["image"]
    if p.items is None and isinstance(p.value.get("text"), str):
        return p.value["text"].encode("utf-8", "surrogatepass")
    return None


def _keep_from_text(text: str | None) -> bool | None:
    if not text:
        return None
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    raise invalid(KEEP_INPUTS_FIELD, "must be true or false")


def _single_text(form: FormData, name: str) -> str | None:
    values = form.getlist(name)
    if len(values) > 1:
        raise invalid(name, "given more than once")
    if not values:
        return None
    if not isinstance(values[0], str):
        raise invalid(name, "must be a text field, not a file")
    return values[0]


async def parse_form(
    form: FormData, pipeline: PipelineSpec, limits: Limits, *, digest: bool = False
) -> ParsedJob:
    """A multipart job request: files in `files` (one per input), optional `webhook`,
    `webhook_events`, `metadata`, `timeout_s`, `priority` and, for kinds that take them (video), `options`
    (JSON text, for every file). An empty text field is the same as leaving it out
    (`webhook_events` aside: it must name events)."""
    fmt = input_format(pipeline.input)
    if not fmt.takes_files:
        raise invalid(MULTIPART_FILES_FIELD, f"pipeline {pipeline.name!r} takes JSON inputs only")
    allowed = {
        MULTIPART_FILES_FIELD,
        "webhook",
        WEBHOOK_EVENTS_FIELD,
        "metadata",
        TIMEOUT_FIELD,
        KEEP_INPUTS_FIELD,
        PRIORITY_FIELD,
    }
    if fmt.options_model is not None:
        allowed.add(MULTIPART_OPTIONS_FIELD)
    unknown = sorted({key for key in form.keys() if key not in allowed})
    if unknown:
        accepted = ", ".join(sorted(allowed))
        raise invalid(cut(unknown[0]), f"unknown form field (accepted: {accepted})")
    uploads = form.getlist(MULTIPART_FILES_FIELD)
    _check_count(len(uploads), MULTIPART_FILES_FIELD, limits)
    webhook = check_webhook(_single_text(form, "webhook"), allow_private=limits.webhook_allow_private)
    event_texts = form.getlist(WEBHOOK_EVENTS_FIELD)
    if any(not isinstance(t, str) for t in event_texts):
        raise invalid(WEBHOOK_EVENTS_FIELD, "must be a text field, not a file")
    events = webhook_events_from_texts([str(t) for t in event_texts], webhook)
    metadata_text = _single_text(form, "metadata")
    metadata = None
    if metadata_text:
        metadata = load_json(metadata_text, "metadata")
        if not isinstance(metadata, dict):
            raise invalid("metadata", "must be a JSON object")
        metadata = check_metadata(metadata)
    timeout_s = timeout_from_text(_single_text(form, TIMEOUT_FIELD), limits)
    keep = _keep_from_text(_single_text(form, KEEP_INPUTS_FIELD))
    priority = check_priority(_single_text(form, PRIORITY_FIELD))
    options = _form_options(form, fmt)
    parsed: list[ParsedInput] = []
    file_digests: list[tuple[str, str | None, bytes]] = []
    taken = 0
    for index, upload in enumerate(uploads):
        where = f"{MULTIPART_FILES_FIELD}[{index}]"
        data, source = await _read_part(upload, where, limits)
        room = limits.max_inputs - taken - (len(uploads) - index - 1)
        # In a thread: probing a video (or decoding a large text) must not hold up the event loop.
        one = await run_in_threadpool(fmt.upload, Upload(data, source, options), where, limits, room)
        if digest:  # hashlib lets go of the GIL for large inputs
            content = await run_in_threadpool(hashlib.sha256, data)
            content = content.digest()
            file_digests.append((MULTIPART_FILES_FIELD, source, content))
        taken += one.count
        parsed.append(one)
    job = replace(
        _job(parsed, webhook, metadata),
        webhook_events=events,
        timeout_s=timeout_s,
        keep_inputs=keep,
        priority=priority,
    )
    if not digest:
        return job
    texts = [(str(key), value) for key, value in form.multi_items() if isinstance(value, str)]
    return replace(job, digest=form_digest(texts, file_digests))


async def _read_part(upload: UploadFile | str, where: str, limits: Limits) -> tuple[bytes, str | None]:
    """One part of `files`: its bytes (at most the input limit, not empty) and its file name."""
    if not isinstance(upload, UploadFile):
        raise invalid(where, "must be a file upload (filename and content), not a text field")
    if upload.size is not None and upload.size > limits.max_input_bytes:
        raise invalid(where, f"input is larger than {limits.max_input_bytes} bytes")
    data = await upload.read(limits.max_input_bytes + 1)
    source = upload.filename[:MAX_SOURCE_CHARS] if upload.filename else None
    if len(data) > limits.max_input_bytes:
        raise invalid(where, f"input is larger than {limits.max_input_bytes} bytes")
    if not data:
        raise invalid(where, "empty file")
    return data, source


def _form_options(form: FormData, fmt: InputFormat) -> BaseModel | None:
    """The `options` form field, validated by the input kind's options model (absent: its defaults)."""
    if fmt.options_model is None:
        return None
    text = _single_text(form, MULTIPART_OPTIONS_FIELD)
    if not text:
        return fmt.options_model()
    data = load_json(text, MULTIPART_OPTIONS_FIELD)
    if not isinstance(data, dict):
        raise invalid(MULTIPART_OPTIONS_FIELD, "must be a JSON object")
    try:
        return fmt.options_model.model_validate(data)
    except ValidationError as exc:
        message, first = describe_validation_errors(exc.errors(), prefix=MULTIPART_OPTIONS_FIELD)
        raise InvalidRequest(message, field=first) from None
