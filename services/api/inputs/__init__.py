"""Turn a job request (JSON or multipart) into the normalised inputs a pipeline's stages get.

Each input kind has one `InputFormat` in `INPUT_FORMATS`: the JSON fields of one input,
how they become normalised inputs and, when files may be uploaded, how one uploaded file
does. A new kind adds its module here and its entry in `parse.INPUT_FORMATS`; nothing else in
the API changes.

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

The package: `common` (limits, parsed forms, `InputFormat`, shared checks), one module per
input kind (`image`, `text`, `video`), `fields` (the job-level fields), `parse` (JSON requests,
the `INPUT_FORMATS` registry and the job assembled from parsed inputs), `form` (multipart
requests), and the readers of raw bodies, `jsonbody` and `multipart`. The names other modules use are re-exported here.
"""

from services.api.formats import MAX_URL_CHARS, MAX_WEBHOOK_CHARS
from services.api.inputs.common import (
    KEEP_INPUTS_FIELD,
    MAX_METADATA_BYTES,
    MAX_SOURCE_CHARS,
    MULTIPART_FILES_FIELD,
    MULTIPART_OPTIONS_FIELD,
    PRIORITY_FIELD,
    TIMEOUT_FIELD,
    WEBHOOK_EVENTS_FIELD,
    FromJson,
    FromUpload,
    InputFormat,
    Limits,
    ParsedInput,
    ParsedJob,
    Upload,
    check_http_url,
    decode_base64,
    invalid,
)
from services.api.inputs.fields import (
    WEBHOOK_POLICY,
    check_metadata,
    check_priority,
    check_timeout,
    check_webhook,
    check_webhook_events,
)
from services.api.inputs.form import parse_form
from services.api.inputs.image import expand_path
from services.api.inputs.parse import INPUT_FORMATS, input_format, parse_json_body, parse_values
from services.api.inputs.text import check_text

__all__ = [
    "INPUT_FORMATS",
    "KEEP_INPUTS_FIELD",
    "MAX_METADATA_BYTES",
    "MAX_SOURCE_CHARS",
    "MAX_URL_CHARS",
    "MAX_WEBHOOK_CHARS",
    "MULTIPART_FILES_FIELD",
    "MULTIPART_OPTIONS_FIELD",
    "PRIORITY_FIELD",
    "TIMEOUT_FIELD",
    "WEBHOOK_EVENTS_FIELD",
    "WEBHOOK_POLICY",
    "FromJson",
    "FromUpload",
    "InputFormat",
    "Limits",
    "ParsedInput",
    "ParsedJob",
    "Upload",
    "check_http_url",
    "check_metadata",
    "check_priority",
    "check_text",
    "check_timeout",
    "check_webhook",
    "check_webhook_events",
    "decode_base64",
    "expand_path",
    "input_format",
    "invalid",
    "parse_form",
    "parse_json_body",
    "parse_values",
]
