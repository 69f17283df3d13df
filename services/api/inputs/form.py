"""A multipart job request into a `ParsedJob`: files in `files` (one per input) and the job-level
fields as text fields; the input kind's `options` (video) as JSON text for every file. The form
itself is read strictly by services/api/inputs/multipart.py."""

from __future__ import annotations

import hashlib
from dataclasses import replace

from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile

from services.api.errors import describe_validation_errors
from services.api.inputs.common import (
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
    check_webhook,
    timeout_from_text,
    webhook_events_from_texts,
)
from services.api.inputs.jsonbody import load_json
from services.api.inputs.multipart import form_digest
from services.api.inputs.parse import assemble_job, check_count, input_format, room_left
from shared.errors import InvalidRequest, cut
from shared.pipeline_spec import PipelineSpec


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
    check_count(len(uploads), MULTIPART_FILES_FIELD, limits)
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
        room = room_left(limits, taken, len(uploads) - index - 1)
        # In a thread: probing a video (or decoding a large text) must not hold up the event loop.
        one = await run_in_threadpool(fmt.upload, Upload(data, source, options), where, limits, room)
        if digest:  # hashlib lets go of the GIL for large inputs
            content = await run_in_threadpool(hashlib.sha256, data)
            content = content.digest()
            file_digests.append((MULTIPART_FILES_FIELD, source, content))
        taken += one.count
        parsed.append(one)
    job = replace(
        assemble_job(parsed, webhook, metadata),
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
