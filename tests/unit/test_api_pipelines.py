"""GET /v1/pipelines[/{name}], the OpenAPI document, and FastAPI's own validation errors."""

from __future__ import annotations

import fakeredis
import httpx
import pytest

from services.api.app import create_app
from shared.settings import Settings
from tests.support.api import MAX_BYTES, MAX_INPUTS, fake_factory, running

pytestmark = pytest.mark.anyio


async def test_pipeline_description_says_how_to_call_it(api: httpx.AsyncClient) -> None:
    response = await api.get("/v1/pipelines/img")
    assert response.status_code == 200
    info = response.json()
    assert info["name"] == "img" and info["description"] == "A test image pipeline."
    assert info["input"] == {
        "kind": "image",
        "json_fields": ["image_base64", "image_url", "path"],
        "multipart_field": "files",
        "options_field": None,
        "max_inputs": MAX_INPUTS,
        "max_input_bytes": MAX_BYTES,
    }
    assert info["output"] == {"size": "bytes in the image"}
    assert [(s["name"], s["kind"], s["needs"]) for s in info["stages"]] == [
        ("pre", "preprocess", ["input"]),
        ("m", "model", ["pre"]),
        ("post", "postprocess", ["m"]),
    ]
    pre, model, post = info["stages"]
    assert pre["fn"] == "json:dumps" and pre["model"] is None and pre["batching"] is None
    assert model["model"] == "m1" and model["fn"] is None
    assert model["batching"] == {"max_batch_size": 4, "max_batch_delay_ms": 2}
    assert post["fn"] == "json:loads"


async def test_pipeline_list_holds_every_pipeline(api: httpx.AsyncClient) -> None:
    response = await api.get("/v1/pipelines")
    assert response.status_code == 200
    listed = response.json()
    assert [p["name"] for p in listed] == ["img"]
    assert listed[0] == (await api.get("/v1/pipelines/img")).json()


async def test_unknown_pipeline_description_is_404(api: httpx.AsyncClient) -> None:
    response = await api.get("/v1/pipelines/other")
    assert response.status_code == 404 and "other" in response.json()["detail"]


async def test_openapi_documents_each_pipelines_submit_with_both_content_types(
    api: httpx.AsyncClient,
) -> None:
    response = await api.get("/openapi.json")
    assert response.status_code == 200
    doc = response.json()
    assert doc["info"]["title"] == "dlpipe" and doc["info"]["version"]
    tags = {"jobs", "pipelines", "health", "metrics", "openai", "inference protocol v2"}
    assert {t["name"] for t in doc["tags"]} == tags
    assert "/v1/pipelines/{name}/jobs" not in doc["paths"]  # one operation per pipeline instead
    post = doc["paths"]["/v1/pipelines/img/jobs"]["post"]
    assert post["operationId"] == "submit_img_job" and post["summary"] == "Submit a job to img"
    assert post["description"].startswith("A test image pipeline.")
    assert "`size`: bytes in the image" in post["description"]
    assert [p["name"] for p in post["parameters"]] == ["Idempotency-Key", "Prefer"]
    content = post["requestBody"]["content"]
    assert content["application/json"]["schema"] == {"$ref": "#/components/schemas/ImageJobRequest"}
    assert content["multipart/form-data"]["schema"] == {"$ref": "#/components/schemas/ImageJobUpload"}
    schemas = doc["components"]["schemas"]
    form = schemas["ImageJobUpload"]
    assert form["properties"]["files"]["items"]["format"] == "binary"
    assert form["properties"]["files"]["maxItems"] == MAX_INPUTS
    assert set(form["properties"]) == {
        "files",
        "webhook",
        "webhook_events",
        "metadata",
        "timeout_s",
        "keep_inputs",
        "priority",
    }
    job_request = schemas["ImageJobRequest"]
    assert job_request["properties"]["inputs"]["items"] == {"$ref": "#/components/schemas/ImageInput"}
    assert job_request["properties"]["inputs"]["maxItems"] == MAX_INPUTS
    assert job_request["additionalProperties"] is False
    # Only the kinds the pipelines use, and no `path` without a data root (every one would be refused).
    assert not {"TextInput", "VideoInput", "VideoOptions"} & set(schemas)
    assert set(schemas["ImageInput"]["properties"]) == {"image_base64", "image_url"}
    assert content["application/json"]["examples"]["base64"]["value"]["inputs"][0]["image_base64"]
    # Every $ref in the document resolves.
    text = response.text
    for name in {part.split('"')[0] for part in text.split('"#/components/schemas/')[1:]}:
        assert name in schemas, name
    assert {"202", "409", "413", "415", "422", "429"} <= set(post["responses"])
    assert "404" not in post["responses"]  # the pipeline is there
    assert "Location" in post["responses"]["202"]["headers"]
    assert post["tags"] == ["jobs"]


async def test_an_unknown_pipeline_is_still_404_with_a_message(api: httpx.AsyncClient) -> None:
    body = {"inputs": [{"image_url": "https://x.example/a.jpg"}]}
    response = await api.post("/v1/pipelines/nope/jobs", json=body)
    assert response.status_code == 404
    assert response.json()["detail"] == "no pipeline 'nope' (known: img)"


async def test_docs_page_is_served(api: httpx.AsyncClient) -> None:
    response = await api.get("/docs")
    assert response.status_code == 200 and "openapi.json" in response.text


async def test_fastapi_validation_errors_are_422_naming_the_field(
    settings: Settings, fake_server: fakeredis.FakeServer
) -> None:
    app = create_app(settings, redis_factory=fake_factory(fake_server))

    @app.get("/probe")
    async def probe(limit: int) -> dict[str, int]:  # a route with a typed parameter
        return {"limit": limit}

    async with running(app) as client:
        bad = await client.get("/probe", params={"limit": "many"})
        missing = await client.get("/probe")
        good = await client.get("/probe", params={"limit": "3"})
    assert good.status_code == 200
    assert bad.status_code == 422 and bad.json()["field"] == "limit"
    assert bad.json()["detail"].startswith("limit: ") and "integer" in bad.json()["detail"]
    assert missing.status_code == 422 and missing.json()["field"] == "limit"
