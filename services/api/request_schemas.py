"""The request bodies of a submit operation, per input kind, as JSON Schema (OpenAPI 3.1).

Each schema states exactly what the API accepts, from the same settings and rules it checks
with: the input models (services/api/input_models.py), the string patterns
(services/api/formats.py), the counts and bounds of Settings. What no schema can state (that a
path exists, that a video is readable, sizes in bytes, internal webhook hosts) is said in the
descriptions. A `path` or `video_path` is offered only when the data root is set, since the
API refuses every one otherwise (so without it a video pipeline takes uploads only).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from services.api import formats
from services.api.input_models import IMAGE_INPUT_FIELDS, image_input_choice
from services.api.inputs import (
    KEEP_INPUTS_FIELD,
    MAX_METADATA_BYTES,
    MULTIPART_FILES_FIELD,
    MULTIPART_OPTIONS_FIELD,
    PRIORITY_FIELD,
    TIMEOUT_FIELD,
    WEBHOOK_EVENTS_FIELD,
    WEBHOOK_POLICY,
    InputFormat,
)
from shared.messages import WEBHOOK_EVENT_NAMES
from shared.pipeline_spec import InputKind
from shared.priority import NAMES as PRIORITY_NAMES
from shared.settings import Settings

REF = "#/components/schemas/{model}"
_EMPTY = {"const": "", "description": "Empty: the same as leaving the field out."}
_NULL = {"type": "null"}
_JSON = "application/json"


def ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


def model_components(model: type[BaseModel]) -> dict[str, dict[str, Any]]:
    """`model`'s schema and those it refers to, by name (for components/schemas)."""
    schema = model.model_json_schema(ref_template=REF)
    found = schema.pop("$defs", {})
    found[model.__name__] = schema
    return found


def image_input_without_paths(schema: dict[str, Any]) -> dict[str, Any]:
    """ImageInput's schema for a server without a data root: no `path` field."""
    schema = {**schema, "properties": {k: v for k, v in schema["properties"].items() if k != "path"}}
    schema["oneOf"] = [image_input_choice(name) for name in IMAGE_INPUT_FIELDS if name != "path"]
    schema["description"] = (
        "One input of an `image` pipeline, in a JSON request: exactly one of `image_base64` or "
        "`image_url` (none or both: 422; null is the same as leaving one out). (`path` inputs need "
        "`DLPIPE_DATA_ROOT`, unset here.)"
    )
    return schema


def takes_json(kind: InputKind, settings: Settings) -> bool:
    """Whether JSON requests can work at all: a video's JSON input names a file on the server."""
    return kind != InputKind.video or settings.data_root is not None


def _webhook_url(settings: Settings) -> dict[str, Any]:
    if settings.webhook_allow_private:
        hosts = "Internal addresses are allowed on this server (`DLPIPE_WEBHOOK_ALLOW_PRIVATE`)."
    else:
        hosts = (
            "Hosts that are, or resolve to, loopback, private, link-local or other internal addresses "
            "are refused: an IP address (in any spelling) or `localhost` at once with 422, a name when "
            f"the webhook is delivered (`{WEBHOOK_POLICY.override}` allows them)."
        )
    return {
        "type": "string",
        "format": "uri",
        "pattern": formats.HTTP_URL,
        "maxLength": formats.MAX_WEBHOOK_CHARS,
        "description": (
            "http(s) URL that receives the job's events by POST, signed (Standard Webhooks): "
            '`{"type": "job.completed", "timestamp": ..., "data": <the job>}`. RFC 3986 characters, '
            f"a host, a port of at most 65535. {hosts}"
        ),
    }


_EVENTS_DESCRIPTION = (
    "Which events the webhook receives: `started` (a worker took the job), `progress` (items "
    "finished; at most one a second), `completed` (the job ended, whatever its status). "
    "Default: `completed`. Needs `webhook` (a URL)."
)
_KEEP_DESCRIPTION = (
    "Keep the job's uploaded and base64 inputs while the job is kept, for `GET "
    "/v1/jobs/{id}/inputs/{index}` (previews). Default: the server's `DLPIPE_KEEP_INPUTS`."
)
_METADATA_DESCRIPTION = (
    f"Any JSON object, at most {MAX_METADATA_BYTES} bytes as compact JSON (not a size the schema can "
    "state); stored with the job and returned unchanged."
)


_PRIORITY = {
    "enum": list(PRIORITY_NAMES),
    "description": (
        "The job's priority: at every stage its items go into batches before those of lower "
        "priorities, which still get a guaranteed share (8:3:1 of the workers' slots while all "
        "wait), so none starves. Default: `normal`."
    ),
}


def _timeout(settings: Settings) -> dict[str, Any]:
    return {
        "type": "number",
        "exclusiveMinimum": 0,
        "maximum": settings.job_ttl_s,
        "description": (
            "Seconds from submission after which the job's items that have not finished fail as "
            f"`expired` (the job then ends as usual); at most the job TTL ({settings.job_ttl_s} s). "
            "Default: no deadline."
        ),
    }


def _needs_webhook(*, nullable: bool) -> dict[str, Any]:
    """`webhook_events` (unless null) needs a `webhook` URL (not empty, not null)."""
    webhook = {"required": ["webhook"], "properties": {"webhook": {"type": "string", "minLength": 1}}}
    if nullable:
        webhook = {"anyOf": [{"properties": {WEBHOOK_EVENTS_FIELD: _NULL}}, webhook]}
    return {"dependentSchemas": {WEBHOOK_EVENTS_FIELD: webhook}}


def _inputs(items: dict[str, Any], settings: Settings, description: str) -> dict[str, Any]:
    return {
        "type": "array",
        "items": items,
        "minItems": 1,
        "maxItems": settings.max_inputs_per_job,
        "description": (
            f"{description} At most {settings.max_inputs_per_job} inputs per job, counted after a "
            "folder becomes its images and a video its frames (more: 422)."
        ),
    }


def json_body(kind: InputKind, item: str, settings: Settings) -> dict[str, Any]:
    """The JSON request of a pipeline of this input kind; `item` names its input model."""
    return {
        "title": f"{kind.value.capitalize()}JobRequest",
        "description": f"A new job of an `{kind.value}` pipeline, as a JSON body.",
        "type": "object",
        "required": ["inputs"],
        "additionalProperties": False,
        "properties": {
            "inputs": _inputs(
                ref(item), settings, "The job's inputs, in order; the outputs come back in the same order."
            ),
            "webhook": {
                "anyOf": [_webhook_url(settings), _EMPTY, {**_NULL, "description": "No webhook."}],
                "description": "Where to send the job's events (see the first choice).",
            },
            WEBHOOK_EVENTS_FIELD: {
                "anyOf": [
                    {"type": "array", "items": {"enum": list(WEBHOOK_EVENT_NAMES)}, "minItems": 1},
                    _NULL,
                ],
                "description": _EVENTS_DESCRIPTION,
            },
            "metadata": {"anyOf": [{"type": "object"}, _NULL], "description": _METADATA_DESCRIPTION},
            TIMEOUT_FIELD: {"anyOf": [_timeout(settings), _NULL], "description": "Null: no deadline."},
            KEEP_INPUTS_FIELD: {
                "anyOf": [{"type": "boolean"}, _NULL],
                "description": f"{_KEEP_DESCRIPTION} Null: the server's default.",
            },
            PRIORITY_FIELD: {"anyOf": [_PRIORITY, _NULL], "description": "Null: `normal`."},
        },
        **_needs_webhook(nullable=True),
    }


def _file_items(kind: InputKind, fmt: InputFormat, settings: Settings) -> dict[str, Any]:
    limit = f"at most {settings.max_input_bytes} bytes (`DLPIPE_MAX_INPUT_BYTES`)"
    if kind == InputKind.text:
        return {
            "type": "string",
            "format": "binary",
            "contentMediaType": "text/plain; charset=utf-8",
            "pattern": formats.NOT_BLANK,
            "description": (
                f"One text file: UTF-8, not blank, {limit} (a size in bytes the schema cannot state)."
            ),
        }
    what = (
        "A video file (MP4/MOV, Matroska/WebM or AVI) that is readable (else 422)"
        if (kind == InputKind.video)
        else "An image file (JPEG, PNG, WebP, BMP, GIF, TIFF; one that does not decode fails its output)"
    )
    return {"type": "string", "format": "binary", "minLength": 1, "description": f"{what}, {limit}."}


def multipart_body(kind: InputKind, fmt: InputFormat, settings: Settings) -> dict[str, Any]:
    """The multipart/form-data request of a pipeline of this input kind (every field is text but
    `files`; an empty text field is the same as leaving it out)."""
    properties: dict[str, Any] = {
        MULTIPART_FILES_FIELD: _inputs(
            _file_items(kind, fmt, settings), settings, "One part per input, in order (repeat the field)."
        ),
        "webhook": {"anyOf": [_webhook_url(settings), _EMPTY]},
        WEBHOOK_EVENTS_FIELD: {
            "type": "string",
            "pattern": formats.WEBHOOK_EVENTS_TEXT,
            "description": f"{_EVENTS_DESCRIPTION} Names separated by commas, e.g. `started,completed`.",
        },
        "metadata": {
            "anyOf": [
                {"type": "string", "contentMediaType": _JSON, "contentSchema": {"type": "object"}},
                _EMPTY,
            ],
            "description": f"As JSON text. {_METADATA_DESCRIPTION}",
        },
        TIMEOUT_FIELD: {"anyOf": [_timeout(settings), _EMPTY], "description": "A number, as text."},
        KEEP_INPUTS_FIELD: {
            "anyOf": [{"enum": ["true", "false", "1", "0"]}, _EMPTY],
            "description": f"{_KEEP_DESCRIPTION} As text; empty: the server's default.",
        },
        PRIORITY_FIELD: {"anyOf": [_PRIORITY, _EMPTY], "description": "`high`, `normal` or `low`."},
    }
    if fmt.options_model is not None:
        options = fmt.options_model.__name__
        properties[MULTIPART_OPTIONS_FIELD] = {
            "anyOf": [{"type": "string", "contentMediaType": _JSON, "contentSchema": ref(options)}, _EMPTY],
            "description": f"How to take frames from every uploaded video, as JSON text ({options}).",
        }
    return {
        "title": f"{kind.value.capitalize()}JobUpload",
        "description": f"A new job of an `{kind.value}` pipeline, as multipart/form-data.",
        "type": "object",
        "required": [MULTIPART_FILES_FIELD],
        "additionalProperties": False,
        "properties": properties,
        **_needs_webhook(nullable=False),
    }
