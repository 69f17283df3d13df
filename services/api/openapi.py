"""The OpenAPI document: one submit operation per configured pipeline.

Routing has one submit route for every pipeline (`POST /v1/pipelines/{name}/jobs`,
services/api/routers/submit.py), but what a request may hold depends on the pipeline's input
kind. So the document replaces that route's operation with one per pipeline, at its own path
(`/v1/pipelines/image-classify/jobs`), each with its description, the request schemas of its
input kind (services/api/request_schemas.py) and examples that really work. A name that is not
a pipeline still answers 404 (said in the API's description).
"""

from __future__ import annotations

import copy
import re
from typing import Any

from fastapi import FastAPI

from services.api import request_schemas
from services.api.input_models import EXAMPLE_IMAGE_BASE64, ImageInput
from services.api.inputs import input_format
from services.api.routers.submit import SUBMIT_PATH
from shared.pipeline_spec import InputKind, PipelinesConfig, PipelineSpec
from shared.settings import Settings

_HOW = {
    InputKind.image: (
        "Each input is an image: in JSON, exactly one of `image_base64` (the file's bytes), `image_url` "
        "(fetched by the workers){path}; as multipart/form-data, one image file per `files` part."
    ),
    InputKind.text: (
        'Each input is a text: in JSON, `{{"text": ...}}`; as multipart/form-data, one UTF-8 text file '
        "per `files` part."
    ),
    InputKind.video: (
        "Each input is a video, run as one item per frame (progress counts frames) with one output: "
        '`{{"frames": {{"0.500": <that frame\'s result>, ...}}, "errors": {{...}}}}`. '
        "{json}As multipart/form-data, one video file per `files` part, and `options` (JSON text: "
        "`interval`, `fps`) for all of them."
    ),
}


def _json_examples(kind: InputKind, settings: Settings) -> dict[str, dict[str, Any]]:
    if kind == InputKind.image:
        found = {
            "base64": {
                "summary": "One image, base64 (a real 8x8 JPEG)",
                "value": {
                    "inputs": [{"image_base64": EXAMPLE_IMAGE_BASE64}],
                    "metadata": {"request": "abc-123"},
                },
            },
            "url": {
                "summary": "One image by URL, with a deadline",
                "value": {"inputs": [{"image_url": "https://example.com/photos/cat.jpg"}], "timeout_s": 60},
            },
        }
        if settings.data_root is not None:
            found["path"] = {
                "summary": "An image and a folder of them under the data root (they must exist there)",
                "value": {"inputs": [{"path": "photos/cat.jpg"}, {"path": "photos/"}]},
            }
        return found
    if kind == InputKind.text:
        texts = ["a photo of a cat", "quarterly tax filing deadline"]
        return {"texts": {"summary": "Two texts", "value": {"inputs": [{"text": t} for t in texts]}}}
    clip = {"video_path": "clips/cat.mp4", "interval": {"start": 0, "end": 2}, "fps": 2}
    summary = "2 s of a video under the data root (it must exist there)"
    return {"clip": {"summary": summary, "value": {"inputs": [clip]}}}


def _description(pipeline: PipelineSpec, settings: Settings, shared: str) -> str:
    kind = pipeline.input
    if kind == InputKind.image:
        path = ", or `path` (a file or folder under the server's data root)" if settings.data_root else ""
        how = _HOW[kind].format(path=path)
    elif kind == InputKind.video:
        json = (
            "In JSON, `video_path` (a video file under the server's data root) with optional `interval` "
            "and `fps`. "
            if request_schemas.takes_json(kind, settings)
            else ""
        )
        how = _HOW[kind].format(json=json)
    else:
        how = _HOW[kind].format()
    output = "".join(f"\n- `{name}`: {what}" for name, what in pipeline.output.items())
    return f"{pipeline.description}\n\n{how}\n\nEach output's result holds:{output}\n\n{shared}"


def _operation_id(name: str, taken: set[str]) -> str:
    base = "submit_" + re.sub(r"[^0-9A-Za-z]+", "_", name).strip("_").lower() + "_job"
    found, n = base, 2
    while found in taken:
        found, n = f"{base}_{n}", n + 1
    taken.add(found)
    return found


def _components(config: PipelinesConfig, settings: Settings) -> dict[str, dict[str, Any]]:
    """The request schemas the configured pipelines' kinds use, by name."""
    found: dict[str, dict[str, Any]] = {}
    for kind in sorted({p.input for p in config.pipelines.values()}, key=lambda k: k.value):
        fmt = input_format(kind)
        title = kind.value.capitalize()
        if request_schemas.takes_json(kind, settings):
            models = request_schemas.model_components(fmt.json_model)
            if fmt.json_model is ImageInput and settings.data_root is None:
                models["ImageInput"] = request_schemas.image_input_without_paths(models["ImageInput"])
            found.update(models)
            found[f"{title}JobRequest"] = request_schemas.json_body(kind, fmt.json_model.__name__, settings)
        if fmt.takes_files:
            if fmt.options_model is not None:
                found.update(request_schemas.model_components(fmt.options_model))
            found[f"{title}JobUpload"] = request_schemas.multipart_body(kind, fmt, settings)
    return found


def _submit_operation(
    generic: dict[str, Any], pipeline: PipelineSpec, settings: Settings, taken: set[str]
) -> dict[str, Any]:
    kind = pipeline.input
    fmt = input_format(kind)
    title = kind.value.capitalize()
    operation = copy.deepcopy(generic)
    operation["parameters"] = [p for p in operation.get("parameters", []) if p.get("in") != "path"]
    operation["responses"].pop("404", None)  # the pipeline is there: its path is in the document
    operation["summary"] = f"Submit a job to {pipeline.name}"
    operation["description"] = _description(pipeline, settings, generic.get("description", ""))
    operation["operationId"] = _operation_id(pipeline.name, taken)
    content: dict[str, Any] = {}
    if request_schemas.takes_json(kind, settings):
        content["application/json"] = {
            "schema": request_schemas.ref(f"{title}JobRequest"),
            "examples": _json_examples(kind, settings),
        }
    if fmt.takes_files:
        content["multipart/form-data"] = {"schema": request_schemas.ref(f"{title}JobUpload")}
    operation["requestBody"] = {
        "required": True,
        "description": "The inputs, as JSON or as multipart/form-data uploads.",
        "content": content,
    }
    return operation


def install_pipeline_operations(app: FastAPI, config: PipelinesConfig, settings: Settings) -> None:
    """Make `app.openapi()` list one submit operation per pipeline (built once, then cached)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = generate()
        schema.setdefault("components", {}).setdefault("schemas", {}).update(_components(config, settings))
        paths: dict[str, Any] = {}
        taken: set[str] = set()
        for path, item in schema["paths"].items():
            if path != SUBMIT_PATH:
                paths[path] = item
                continue
            for name, pipeline in sorted(config.pipelines.items()):
                concrete = path.replace("{name}", name)
                paths[concrete] = {"post": _submit_operation(item["post"], pipeline, settings, taken)}
        schema["paths"] = paths
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
