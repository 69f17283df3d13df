"""The OpenAPI document with the bundled pipelines: one submit operation per pipeline, each
with its input kind's schemas, and examples that the API really accepts."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import fakeredis
import jsonschema_rs
import pytest
from PIL import Image

from services.api.app import create_app
from services.api.input_models import EXAMPLE_IMAGE_BASE64
from shared.pipeline_spec import load_pipelines
from shared.settings import Settings
from tests.support.api import fake_factory, running
from tests.support.videos import cat_then_coffee

SUBMITS = {"image-classify": "image", "image-tag": "image", "text-embed": "text", "video-classify": "video"}
SAYS = {"image": "Each input is an image", "text": "Each input is a text", "video": "Each input is a video"}


def document(data_root: Path | None) -> dict[str, Any]:
    return create_app(Settings(redis_url="redis://fake.invalid:1/0", data_root=data_root)).openapi()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A data root holding what the examples name."""
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(base64.b64decode(EXAMPLE_IMAGE_BASE64))
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "cat.mp4").write_bytes(cat_then_coffee())
    return tmp_path


def test_the_example_image_is_a_real_tiny_jpeg() -> None:
    data = base64.b64decode(EXAMPLE_IMAGE_BASE64, validate=True)
    with Image.open(io.BytesIO(data)) as image:
        assert (image.format, image.size, image.mode) == ("JPEG", (8, 8), "RGB")
        image.load()
    assert len(data) < 300


def test_each_pipeline_has_its_own_submit_operation_and_the_generic_route_none(root: Path) -> None:
    doc = document(root)
    assert "/v1/pipelines/{name}/jobs" not in doc["paths"]
    operations = {name: doc["paths"][f"/v1/pipelines/{name}/jobs"]["post"] for name in SUBMITS}
    assert len({op["operationId"] for op in operations.values()}) == len(SUBMITS)
    assert operations["image-tag"]["operationId"] == "submit_image_tag_job"
    for name, kind in SUBMITS.items():
        op = operations[name]
        assert op["summary"] == f"Submit a job to {name}" and SAYS[kind] in op["description"]
        title = kind.capitalize()
        content = op["requestBody"]["content"]
        assert content["application/json"]["schema"] == {"$ref": f"#/components/schemas/{title}JobRequest"}
        assert content["multipart/form-data"]["schema"] == {"$ref": f"#/components/schemas/{title}JobUpload"}
    schemas = doc["components"]["schemas"]
    assert "JobRequest" not in schemas  # no request schema that mixes the kinds any more
    for kind in ("Image", "Text"):
        assert "options" not in schemas[f"{kind}JobUpload"]["properties"]  # video only
    assert "options" in schemas["VideoJobUpload"]["properties"]
    text_file = schemas["TextJobUpload"]["properties"]["files"]["items"]
    assert text_file["contentMediaType"].startswith("text/plain")
    assert set(schemas["ImageInput"]["properties"]) == {"image_base64", "image_url", "path"}


def test_without_a_data_root_no_path_is_offered_and_video_takes_uploads_only() -> None:
    doc = document(None)
    schemas = doc["components"]["schemas"]
    assert set(schemas["ImageInput"]["properties"]) == {"image_base64", "image_url"}
    choices = [choice["required"] for choice in schemas["ImageInput"]["oneOf"]]
    assert choices == [["image_base64"], ["image_url"]]
    video = doc["paths"]["/v1/pipelines/video-classify/jobs"]["post"]
    assert set(video["requestBody"]["content"]) == {"multipart/form-data"}
    assert "VideoInput" not in schemas and "VideoJobRequest" not in schemas
    image = doc["paths"]["/v1/pipelines/image-classify/jobs"]["post"]["requestBody"]["content"]
    assert "path" not in image["application/json"]["examples"]


def test_limits_in_the_schema_follow_the_settings(root: Path) -> None:
    settings = Settings(
        redis_url="redis://fake.invalid:1/0", data_root=root, max_inputs_per_job=7, job_ttl_s=600
    )
    schemas = create_app(settings).openapi()["components"]["schemas"]
    for name in ("ImageJobRequest", "ImageJobUpload"):
        inputs = schemas[name]["properties"].get("inputs") or schemas[name]["properties"]["files"]
        assert (inputs["minItems"], inputs["maxItems"]) == (1, 7)
    timeout = schemas["ImageJobRequest"]["properties"]["timeout_s"]["anyOf"][0]
    assert (timeout["exclusiveMinimum"], timeout["maximum"]) == (0, 600)


def test_every_json_example_is_valid_for_its_schema(root: Path) -> None:
    doc = document(root)
    for path, item in doc["paths"].items():
        content = item.get("post", {}).get("requestBody", {}).get("content", {}).get("application/json")
        if not content:
            continue
        schema = {**content["schema"], "components": doc["components"]}
        validator = jsonschema_rs.validator_for(schema, validate_formats=True)
        for name, example in content["examples"].items():
            assert validator.is_valid(example["value"]), (path, name)


@pytest.mark.anyio
async def test_every_json_example_is_accepted(root: Path, fake_server: fakeredis.FakeServer) -> None:
    settings = Settings(redis_url="redis://fake.invalid:1/0", data_root=root)
    app = create_app(settings, redis_factory=fake_factory(fake_server))
    examples = [
        (path, example["value"])
        for path, item in app.openapi()["paths"].items()
        if path.startswith("/v1/pipelines/")  # the submits (the synchronous protocol routes: tests/e2e)
        for example in item.get("post", {})
        .get("requestBody", {})
        .get("content", {})
        .get("application/json", {})
        .get("examples", {})
        .values()
    ]
    kinds = [p.input.value for p in load_pipelines(settings.pipelines_file).pipelines.values()]
    # base64, URL and path for each image pipeline; one for each text or video pipeline
    assert len(examples) == sum(3 if kind == "image" else 1 for kind in kinds) >= 8
    async with running(app) as api:
        for path, body in examples:
            response = await api.post(path, json=body)
            assert response.status_code == 202, (path, body, response.text)


@pytest.mark.anyio
async def test_an_upload_as_the_multipart_schema_describes_it_is_accepted(
    root: Path, fake_server: fakeredis.FakeServer
) -> None:
    settings = Settings(redis_url="redis://fake.invalid:1/0", data_root=root)
    app = create_app(settings, redis_factory=fake_factory(fake_server))
    form = {
        "webhook": "https://example.com/hooks/dlpipe",
        "webhook_events": "started, completed",
        "metadata": '{"request": "abc-123"}',
        "timeout_s": "30",
    }
    async with running(app) as api:
        video = [("files", ("cat.mp4", cat_then_coffee(), "video/mp4"))]
        options = {**form, "options": '{"fps": 1}'}
        response = await api.post("/v1/pipelines/video-classify/jobs", files=video, data=options)
        assert response.status_code == 202, response.text
        text = [("files", ("a.txt", b"a photo of a cat", "text/plain"))]
        response = await api.post("/v1/pipelines/text-embed/jobs", files=text, data={**form, "metadata": ""})
        assert response.status_code == 202, response.text
        assert response.json()["metadata"] is None  # an empty field is the same as none
        response = await api.post("/v1/pipelines/text-embed/jobs", files=text, data={"metadata": "null"})
        assert response.status_code == 422 and response.json()["detail"] == "metadata: must be a JSON object"
