"""A JSON job request (or another protocol's values) into a `ParsedJob`: the input kinds' formats
(`INPUT_FORMATS`), the count limits, and the job assembled from its parsed inputs (`assemble_job`:
items, groups, blobs, what `keep_inputs` keeps). A multipart form is services/api/inputs/form.py's."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from services.api.errors import describe_validation_errors
from services.api.input_models import ImageInput, TextInput, VideoInput, VideoOptions
from services.api.inputs.common import (
    _JSON_FIELDS,
    KEEP_INPUTS_FIELD,
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
)
from services.api.inputs.image import _image_from_file, _image_from_json
from services.api.inputs.jsonbody import gc_paused, load_json
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


def check_count(count: int, field: str, limits: Limits) -> None:
    if count == 0:
        raise invalid(field, "must hold at least one input")
    if count > limits.max_inputs:
        raise invalid(field, f"{count} inputs, at most {limits.max_inputs} per job")


def room_left(limits: Limits, taken: int, inputs_to_come: int) -> int:
    """Items the next input may make: what the cap allows, less what is taken and what the inputs
    still to come need (one item each, at least)."""
    return limits.max_inputs - taken - inputs_to_come


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
    check_count(len(raw_inputs), "inputs", limits)
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
        room = room_left(limits, taken, len(raw_inputs) - index - 1)
        new = fmt.from_json(item, where, limits, room)
        taken += sum(p.count for p in new)
        parsed.extend(new)
    check_count(taken, "inputs", limits)
    job = replace(
        assemble_job(parsed, webhook, metadata),
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
    check_count(len(values), field, limits)
    fmt = input_format(pipeline.input)
    parsed: list[ParsedInput] = []
    taken = 0
    for index, value in enumerate(values):
        where = f"{field}[{index}]"
        room = room_left(limits, taken, len(values) - index - 1)
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
    check_count(taken, field, limits)
    return assemble_job(parsed, None, None)


def _json_digest(data: dict[str, Any]) -> str:
    with gc_paused():
        canonical = orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(b"json\0" + canonical).hexdigest()


def assemble_job(
    parsed: list[ParsedInput], webhook: str | None, metadata: dict[str, Any] | None
) -> ParsedJob:
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
