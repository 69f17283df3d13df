"""The models of one input in a JSON job request, per input kind, and of a video upload's
`options`. The API validates each element of `inputs` with its pipeline's model, and the
OpenAPI document shows the same models (services/api/request_schemas.py), so what the
document states is what is checked. String rules beyond types (base64, URLs, not blank)
are `services/api/formats.py` patterns, stated in the schema and checked by the parsers
(services/api/inputs/) with clearer messages than a pattern's.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from services.api import formats
from shared.datapaths import MAX_PATH_CHARS
from shared.video import DEFAULT_FPS, MAX_FPS

# A real 8x8 JPEG (one orange colour, 286 bytes), made once with Pillow: the examples of image
# pipelines send it, and it decodes (tests/unit/test_api_openapi.py checks that).
EXAMPLE_IMAGE_BASE64 = (
    "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDABALDA4MChAODQ4SERATGCgaGBYWGDEjJR0oOjM9PDkzODdASFxOQERXRTc4UG1RV19i"
    "Z2hnPk1xeXBkeFxlZ2P/2wBDARESEhgVGC8aGi9jQjhCY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2Nj"
    "Y2NjY2NjY2P/wAARCAAIAAgDASIAAhEBAxEB/8QAFQABAQAAAAAAAAAAAAAAAAAAAAP/xAAUEAEAAAAAAAAAAAAAAAAAAAAA/8QA"
    "FAEBAAAAAAAAAAAAAAAAAAAABf/EABQRAQAAAAAAAAAAAAAAAAAAAAD/2gAMAwEAAhEDEQA/AKABiz//2Q=="
)

IMAGE_INPUT_FIELDS = ("image_base64", "image_url", "path")
_PATH_RULES = (
    "relative to its data root (`DLPIPE_DATA_ROOT`), never outside it (after `..` and symlinks); "
    "not blank, no NUL character. That it exists cannot be stated here: a path with nothing "
    "there gets 422."
)


def _image_input_schema(schema: dict[str, Any]) -> None:
    """Each field is a string or null (the same as leaving it out), and exactly one is a string."""
    rules = {
        "image_base64": {"pattern": formats.BASE64},
        "image_url": {
            "format": "uri",
            "pattern": formats.HTTP_URL_NO_CREDENTIALS,
            "maxLength": formats.MAX_URL_CHARS,
        },
        "path": {"pattern": formats.DATA_PATH, "maxLength": MAX_PATH_CHARS},
    }
    for name in IMAGE_INPUT_FIELDS:
        prop = schema["properties"][name]
        prop.pop("anyOf", None)
        prop.pop("default", None)
        prop.update({"type": ["string", "null"], **rules[name]})
    schema["oneOf"] = [image_input_choice(name) for name in IMAGE_INPUT_FIELDS]


def image_input_choice(name: str) -> dict[str, Any]:
    """The branch of ImageInput's `oneOf` where `name` is the string given."""
    return {"required": [name], "properties": {name: {"type": "string"}}}


class ImageInput(BaseModel):
    """One input of an `image` pipeline, in a JSON request: exactly one of `image_base64`,
    `image_url` or `path` (none or several: 422; null is the same as leaving one out)."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra=_image_input_schema)
    image_base64: str | None = Field(
        default=None,
        description=(
            "The image file's bytes (JPEG, PNG, ...), base64-encoded: the standard alphabet, padded "
            "with `=`, without line breaks. A data URL prefix (`data:image/jpeg;base64,`) is accepted. "
            "At most `DLPIPE_MAX_INPUT_BYTES` once decoded (not a length the schema can state)."
        ),
        examples=[EXAMPLE_IMAGE_BASE64],
    )
    image_url: str | None = Field(
        default=None,
        description=(
            "An http(s) URL the preprocess worker fetches the image from: RFC 3986 characters, a host, "
            "no credentials. The fetch must answer 2xx with an `image/*` content type within "
            "`DLPIPE_FETCH_TIMEOUT_S`, at most `DLPIPE_MAX_INPUT_BYTES`, following at most "
            "`DLPIPE_FETCH_MAX_REDIRECTS` redirects; hosts that resolve to loopback, private, "
            "link-local or other internal addresses are refused (unless `DLPIPE_FETCH_ALLOW_PRIVATE`). "
            "Otherwise that output fails with the reason (the job is accepted)."
        ),
        examples=["https://example.com/photos/cat.jpg"],
    )
    path: str | None = Field(
        default=None,
        description=(
            f"A file or folder on the server, {_PATH_RULES} A folder means every image directly in it "
            "(jpg, jpeg, png, webp, bmp, gif, tif, tiff; by name; not subfolders), one output each, with "
            "its path in the output's `source`; each counts toward the job's inputs."
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

    model_config = ConfigDict(extra="forbid", strict=True)
    text: str = Field(
        description=(
            "The text: not blank (at least one character that is not whitespace), valid Unicode, at "
            "most `DLPIPE_MAX_INPUT_BYTES` in UTF-8 (bytes, not a length the schema can state)."
        ),
        json_schema_extra={"pattern": formats.NOT_BLANK},
        examples=["a photo of a cat"],
    )


class Interval(BaseModel):
    """The part of a video to take frames from, in seconds from its start. `end` must be greater
    than `start` (not a rule the schema can state), and `start` before the video's end."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
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
    "input toward the job's limit (too many: 422)."
)


class VideoOptions(BaseModel):
    """The `options` form field of a multipart request to a video pipeline (JSON text): how
    frames are taken from every uploaded video."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
    interval: Interval | None = Field(default=None, description=_INTERVAL_DESCRIPTION)
    fps: float = Field(default=DEFAULT_FPS, gt=0, le=MAX_FPS, description=_FPS_DESCRIPTION, examples=[2])


class VideoInput(BaseModel):
    """One input of a `video` pipeline, in a JSON request: a video file on the server and
    which frames to take. (Upload a video with multipart/form-data instead.)"""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
    video_path: str = Field(
        description=(
            f"A video file on the server, {_PATH_RULES} MP4/MOV, Matroska/WebM or AVI, readable "
            "(else 422). The output's `source`."
        ),
        json_schema_extra={"pattern": formats.DATA_PATH, "maxLength": MAX_PATH_CHARS},
        examples=["clips/cat.mp4"],
    )
    interval: Interval | None = Field(default=None, description=_INTERVAL_DESCRIPTION)
    fps: float = Field(default=DEFAULT_FPS, gt=0, le=MAX_FPS, description=_FPS_DESCRIPTION, examples=[2])
