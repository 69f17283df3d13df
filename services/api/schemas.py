"""The API's own request and response models (JobView itself lives in shared.messages)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from shared.messages import StageKind, WebhookEventName
from shared.video import DEFAULT_FPS, MAX_FPS

EXAMPLE_IMAGE_BASE64 = "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAgGBgcGBQgHBwcJCQgKDBQNDAsLDBkSEw8U..."


IMAGE_INPUT_FIELDS = ("image_base64", "image_url", "path")


def _image_input_schema(schema: dict[str, Any]) -> None:
    """Each field is a plain string in the schema (null is only the default), and exactly one is given."""
    for name in IMAGE_INPUT_FIELDS:
        prop = schema["properties"][name]
        prop.pop("anyOf", None)
        prop.pop("default", None)
        prop["type"] = "string"
    schema["oneOf"] = [{"required": [name]} for name in IMAGE_INPUT_FIELDS]


class ImageInput(BaseModel):
    """One input of an `image` pipeline, in a JSON request: exactly one of `image_base64`,
    `image_url` or `path` (none or several: 422)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_image_input_schema)
    image_base64: str | None = Field(
        default=None,
        description=(
            "The image file's bytes (JPEG, PNG, ...), base64-encoded without line breaks. "
            "A data URL prefix (`data:image/jpeg;base64,`) is accepted."
        ),
        examples=[EXAMPLE_IMAGE_BASE64],
    )
    image_url: str | None = Field(
        default=None,
        description=(
            "An http(s) URL the preprocess worker fetches the image from (no credentials in it; at "
            "most 2048 characters). The fetch must answer 2xx with an `image/*` content type within "
            "`DLPIPE_FETCH_TIMEOUT_S`, at most `DLPIPE_MAX_INPUT_BYTES`, following at most "
            "`DLPIPE_FETCH_MAX_REDIRECTS` redirects; hosts that resolve to loopback, private, "
            "link-local or other internal addresses are refused (unless `DLPIPE_FETCH_ALLOW_PRIVATE`). "
            "Otherwise that output fails with the reason."
        ),
        examples=["https://example.com/photos/cat.jpg"],
    )
    path: str | None = Field(
        default=None,
        description=(
            "A file or folder on the server, relative to its data root (`DLPIPE_DATA_ROOT`; unset: "
            "refused), never outside it. A folder means every image directly in it (jpg, jpeg, png, "
            "webp, bmp, gif, tif, tiff; by name; not subfolders), one output each, with its path in "
            "the output's `source`."
        ),
        examples=["photos/cat.jpg", "photos/"],
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> ImageInput:
        given = [name for name in IMAGE_INPUT_FIELDS if getattr(self, name) is not None]
        if len(given) != 1:
            found = f"got {', '.join(given)}" if given else "got none"
            raise PydanticCustomError(
                "image_input_fields",
                "exactly one of image_base64, image_url or path is required ({found})",
                {"found": found},
            )
        return self


class TextInput(BaseModel):
    """One input of a `text` pipeline, in a JSON request."""

    model_config = ConfigDict(extra="forbid")
    text: str = Field(
        description="The text, as a JSON string (not empty; at most the API's max_input_bytes in UTF-8).",
        examples=["a photo of a cat"],
    )


class Interval(BaseModel):
    """The part of a video to take frames from, in seconds from its start."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    start: float = Field(default=0.0, ge=0, description="The first frame's time (default 0).", examples=[0.0])
    end: float | None = Field(
        default=None,
        gt=0,
        description="No frame at or after this time (exclusive; default: the video's end).",
        examples=[2.0],
    )

    @model_validator(mode="after")
    def _ordered(self) -> Interval:
        if self.end is not None and self.end <= self.start:
            raise PydanticCustomError(
                "interval_order",
                "end ({end}) must be greater than start ({start})",
                {"end": self.end, "start": self.start},
            )
        return self


_INTERVAL_DESCRIPTION = "Where to take frames from (default: the whole video)."
_FPS_DESCRIPTION = (
    f"Frames per second to take (default {DEFAULT_FPS:g}, at most {MAX_FPS:g}): at start, "
    "start + 1/fps, ... before the interval's end and the video's. Each frame counts as one "
    "input toward the job's limit."
)


class VideoOptions(BaseModel):
    """The `options` form field of a multipart request to a video pipeline (JSON text): how
    frames are taken from every uploaded video."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    interval: Interval | None = Field(default=None, description=_INTERVAL_DESCRIPTION)
    fps: float = Field(default=DEFAULT_FPS, gt=0, le=MAX_FPS, description=_FPS_DESCRIPTION, examples=[2])


class VideoInput(BaseModel):
    """One input of a `video` pipeline, in a JSON request: a video file on the server and
    which frames to take. (Upload a video with multipart/form-data instead.)"""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    video_path: str = Field(
        description=(
            "A video file on the server, relative to its data root (`DLPIPE_DATA_ROOT`; unset: "
            "refused), never outside it: MP4/MOV, Matroska/WebM or AVI. The output's `source`."
        ),
        examples=["clips/cat.mp4"],
    )
    interval: Interval | None = Field(default=None, description=_INTERVAL_DESCRIPTION)
    fps: float = Field(default=DEFAULT_FPS, gt=0, le=MAX_FPS, description=_FPS_DESCRIPTION, examples=[2])


class JobRequest(BaseModel):
    """A new job, as a JSON body. Multipart bodies carry the same fields (see the endpoint)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "inputs": [{"image_base64": EXAMPLE_IMAGE_BASE64}],
                    "webhook": "https://example.com/hooks/dlpipe",
                    "metadata": {"request": "abc-123"},
                },
                {"inputs": [{"text": "a photo of a cat"}, {"text": "quarterly tax filing deadline"}]},
                {"inputs": [{"image_url": "https://example.com/photos/cat.jpg"}, {"path": "photos/"}]},
                {"inputs": [{"video_path": "clips/cat.mp4", "interval": {"start": 0, "end": 2}, "fps": 2}]},
            ]
        },
    )
    inputs: list[ImageInput | TextInput | VideoInput] = Field(
        min_length=1,
        description="The job's inputs, in order; the outputs come back in the same order. "
        "The fields of one input depend on the pipeline's input kind (`GET /v1/pipelines/{name}`).",
    )
    webhook: str | None = Field(
        default=None,
        description=(
            "http(s) URL that receives the job's events by POST, signed (Standard Webhooks): "
            '`{"type": "job.completed", "timestamp": ..., "data": <the job>}`. Hosts that are, or '
            "resolve to, internal addresses are refused."
        ),
        examples=["https://example.com/hooks/dlpipe"],
    )
    webhook_events: list[WebhookEventName] | None = Field(
        default=None,
        min_length=1,
        description=(
            "Which events the webhook receives: `started` (a worker took the job), `progress` (items "
            "finished; at most one a second), `completed` (the job ended, whatever its status). "
            'Default: `["completed"]`. Needs `webhook`.'
        ),
        examples=[["started", "progress", "completed"]],
    )
    metadata: dict[str, Any] | None = Field(
        default=None,
        description="Any JSON object; stored with the job and returned unchanged.",
        examples=[{"request": "abc-123"}],
    )
    timeout_s: float | None = Field(
        default=None,
        gt=0,
        description=(
            "Seconds from submission after which the job's items that have not finished fail as "
            "`expired` (the job then ends as usual); at most the server's job TTL. Default: no deadline."
        ),
        examples=[30],
    )


def multipart_job_schema() -> dict[str, Any]:
    """JSON schema of a multipart/form-data job request (for OpenAPI)."""
    return {
        "type": "object",
        "required": ["files"],
        "properties": {
            "files": {
                "type": "array",
                "items": {"type": "string", "format": "binary"},
                "minItems": 1,
                "description": "One file per input, in order (repeat the `files` field).",
            },
            "webhook": {
                "type": "string",
                "description": "http(s) URL that receives the job's events by POST (signed).",
            },
            "webhook_events": {
                "type": "string",
                "description": (
                    "Which events the webhook receives, comma-separated: started, progress, completed "
                    "(default: completed)."
                ),
                "example": "started,completed",
            },
            "metadata": {
                "type": "string",
                "description": "A JSON object, as text; stored with the job and returned unchanged.",
                "example": '{"request": "abc-123"}',
            },
            "timeout_s": {
                "type": "string",
                "description": "Seconds after which unfinished items fail as `expired` (a number, as text).",
                "example": "30",
            },
            "options": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": {"$ref": "#/components/schemas/VideoOptions"},
                "description": (
                    "Video pipelines only: how to take frames from every uploaded video, as JSON "
                    "text (the VideoOptions schema: `interval`, `fps`)."
                ),
                "example": '{"interval": {"start": 0, "end": 2}, "fps": 2}',
            },
        },
    }


class ErrorBody(BaseModel):
    """Every error answer: what is wrong and, for bad requests, which field."""

    detail: str = Field(examples=["inputs[2].image_base64: not valid base64"])
    field: str | None = Field(default=None, examples=["inputs[2].image_base64"])


class InputInfo(BaseModel):
    kind: str = Field(description="The pipeline's input kind.", examples=["image"])
    json_fields: list[str] = Field(
        description="Fields of one element of `inputs` in a JSON request.", examples=[["image_base64"]]
    )
    multipart_field: str | None = Field(
        description="Form field carrying one file per input in a multipart request (null: JSON only).",
        examples=["files"],
    )
    options_field: str | None = Field(
        default=None,
        description="Form field of a multipart request holding options as JSON text (video: interval, fps).",
        examples=["options"],
    )
    max_inputs: int = Field(description="Most inputs one job may hold (a video: each frame counts).")
    max_input_bytes: int = Field(description="Largest single input, in decoded bytes.")


class BatchingInfo(BaseModel):
    max_batch_size: int
    max_batch_delay_ms: float


class StageInfo(BaseModel):
    name: str
    kind: StageKind
    needs: list[str] = Field(description="What the stage reads: `input` and/or earlier stages.")
    fn: str | None = Field(default=None, description="The function of a pre/postprocess stage.")
    model: str | None = Field(default=None, description="The model of a model stage.")
    batching: BatchingInfo | None = Field(
        default=None, description="How the model worker batches this model's items (model stages)."
    )
    batching_by_device: dict[str, BatchingInfo] | None = Field(
        default=None,
        description=(
            "Device types (`cuda`, ...) on which the model worker batches otherwise than `batching` says."
        ),
    )


class PipelineInfo(BaseModel):
    name: str = Field(examples=["image-classify"])
    description: str
    input: InputInfo
    output: dict[str, Any] = Field(description="What one item's result holds.")
    stages: list[StageInfo]


class Health(BaseModel):
    status: str = Field(examples=["ok"])


class Readiness(BaseModel):
    status: str = Field(description="`ready` or `unavailable`.", examples=["ready"])
    reason: str | None = Field(
        default=None, examples=["no live worker for stream model.efficientnet_lite0"]
    )
    workers: int = Field(default=0, description="Live workers seen.")
