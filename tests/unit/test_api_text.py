"""The `text` input kind: JSON `{"text": ...}` and text-file uploads, against fakeredis."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fakeredis
import httpx
import pytest

from services.api.app import create_app
from services.api.inputs import INPUT_FORMATS, Limits
from shared import codecs, keys
from shared.errors import InvalidRequest
from shared.pipeline_spec import InputKind
from shared.settings import Settings
from tests.support.api import (
    MAX_BYTES,
    MAX_INPUTS,
    assert_422_naming,
    fake_factory,
    make_settings,
    multipart,
    no_job_written,
    pipelines_yaml,
    running,
    write_pipelines,
)

pytestmark = pytest.mark.anyio

TEXT_PIPELINES_YAML = pipelines_yaml("txt", "text", "A test text pipeline.", '{embedding: "numbers"}')
URL = "/v1/pipelines/txt/jobs"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(write_pipelines(tmp_path, TEXT_PIPELINES_YAML))


@pytest.fixture
async def api(settings: Settings, fake_server: fakeredis.FakeServer):  # noqa: ANN201
    app = create_app(settings, redis_factory=fake_factory(fake_server))
    async with running(app) as client:
        yield client


def stored_inputs(client: fakeredis.FakeRedis, job_id: str, count: int) -> list[Any]:
    return [codecs.decode(client.hget(keys.item(job_id, i), keys.INPUT_FIELD)) for i in range(count)]


def test_the_text_kind_has_a_format_with_files() -> None:
    fmt = INPUT_FORMATS[InputKind.text]
    assert fmt.json_fields == ["text"] and fmt.from_file is not None
    limits = Limits(max_inputs=1, max_input_bytes=8)
    assert fmt.from_file("héllo".encode(), "files[0]", limits) == {"text": "héllo"}
    assert fmt.from_file(b"\xef\xbb\xbfhi", "files[0]", limits) == {"text": "hi"}  # BOM dropped
    with pytest.raises(InvalidRequest, match=r"^files\[3\]: not valid UTF-8") as info:
        fmt.from_file(b"ok \xff\xfe", "files[3]", limits)
    assert info.value.field == "files[3]"
    with pytest.raises(InvalidRequest, match="larger than 8 bytes"):
        fmt.from_file("ééééé".encode(), "files[0]", limits)  # 5 characters, 10 bytes


async def test_json_texts_are_queued_as_text_inputs(
    api: httpx.AsyncClient, sync_redis: fakeredis.FakeRedis
) -> None:
    texts = ["a photo of a cat", "  padded, kept as is \n", "日本語"]
    response = await api.post(URL, json={"inputs": [{"text": t} for t in texts]})
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["progress"]["total"] == 3
    assert stored_inputs(sync_redis, job["id"], 3) == [{"text": t} for t in texts]


async def test_text_files_are_queued_as_their_utf8_text(
    api: httpx.AsyncClient, sync_redis: fakeredis.FakeRedis
) -> None:
    files = [
        ("files", ("a.txt", "first ünïcode".encode(), "text/plain")),
        ("files", ("b.txt", b"second", "text/plain")),
    ]
    response = await api.post(URL, files=files)
    assert response.status_code == 202, response.text
    stored = stored_inputs(sync_redis, response.json()["id"], 2)
    assert stored == [{"text": "first ünïcode"}, {"text": "second"}]


async def test_the_pipeline_description_names_the_text_field(api: httpx.AsyncClient) -> None:
    info = (await api.get("/v1/pipelines/txt")).json()
    assert info["input"] == {
        "kind": "text",
        "json_fields": ["text"],
        "multipart_field": "files",
        "options_field": None,
        "max_inputs": MAX_INPUTS,
        "max_input_bytes": MAX_BYTES,
    }


CASES: list[tuple[str, Any, str, str]] = [
    ("empty text", {"inputs": [{"text": "ok"}, {"text": ""}]}, "inputs[1].text", "empty"),
    ("blank text", {"inputs": [{"text": " \n\t\u3000"}]}, "inputs[0].text", "empty"),
    ("text not a string", {"inputs": [{"text": 42}]}, "inputs[0].text", "string"),
    ("text missing", {"inputs": [{}]}, "inputs[0].text", "required"),
    ("image field on a text pipeline", {"inputs": [{"image_base64": "aGk="}]}, "inputs[0].text", "required"),
    ("text too big", {"inputs": [{"text": "x" * (MAX_BYTES + 1)}]}, "inputs[0].text", f"{MAX_BYTES} bytes"),
    ("text too big in UTF-8", {"inputs": [{"text": "é" * (MAX_BYTES // 2 + 1)}]}, "inputs[0].text", "UTF-8"),
    ("input not an object", {"inputs": ["just a string"]}, "inputs[0]", "text"),
]


@pytest.mark.parametrize(("body", "field", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_invalid_text_inputs_are_422_naming_the_field(
    api: httpx.AsyncClient, sync_redis: fakeredis.FakeRedis, body: Any, field: str, fragment: str
) -> None:
    await assert_422_naming(api, URL, field, fragment, sync_redis, json=body)


async def test_a_lone_surrogate_is_422(api: httpx.AsyncClient, sync_redis: fakeredis.FakeRedis) -> None:
    body = b'{"inputs": [{"text": "abc\\ud800def"}]}'  # valid JSON, not encodable as UTF-8
    response = await api.post(URL, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "inputs[0].text" and "surrogate" in response.json()["detail"]
    assert no_job_written(sync_redis)


FORM_CASES: list[tuple[str, list[tuple[str, str | None, bytes]], str, str]] = [
    ("invalid UTF-8", [("files", "a.txt", b"ok"), ("files", "b.txt", b"caf\xe9")], "files[1]", "UTF-8"),
    ("blank file", [("files", "a.txt", b" \r\n ")], "files[0]", "empty"),
    ("empty file", [("files", "a.txt", b"")], "files[0]", "empty"),
]


@pytest.mark.parametrize(
    ("parts", "field", "fragment"), [c[1:] for c in FORM_CASES], ids=[c[0] for c in FORM_CASES]
)
async def test_invalid_text_files_are_422_naming_the_field(
    api: httpx.AsyncClient, sync_redis: fakeredis.FakeRedis, parts: Any, field: str, fragment: str
) -> None:
    body, headers = multipart(parts)
    await assert_422_naming(api, URL, field, fragment, sync_redis, content=body, headers=headers)
