"""`image` inputs: base64 bytes, an http(s) URL (checked for syntax only) or a path under
the data root (a folder: one input per image in it); an uploaded file is its bytes."""

from __future__ import annotations

from typing import Any

from services.api.formats import MAX_URL_CHARS
from services.api.input_models import ImageInput
from services.api.inputs.common import (
    Limits,
    ParsedInput,
    check_http_url,
    decode_base64,
    invalid,
    resolve_data_path,
)
from shared import datapaths


def expand_path(value: str, field: str, limits: Limits, room: int) -> list[ParsedInput]:
    """A `path` input: one input for a file, one per image for a folder (at most `room`)."""
    full, rel = resolve_data_path(value, field, limits)
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
