"""Image inputs by reference at the API: `image_url` (syntax only) and `path` (under the data
root; a folder is one input per image), and each output's `source`. Against fakeredis."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import fakeredis
import httpx
import pytest

from services.api.app import create_app
from shared import codecs, keys
from shared.job_record import job_view_from_redis
from shared.messages import ItemOutput, ItemStatus
from shared.settings import Settings
from tests.support.api import (
    MAX_INPUTS,
    assert_422_naming,
    b64,
    fake_factory,
    make_settings,
    running,
    write_pipelines,
)

pytestmark = pytest.mark.anyio

URL = "/v1/pipelines/img/jobs"
OK = b64(b"\xff\xd8image")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """<tmp>/data: two/{b.jpg,a.png,notes.txt}, four/ (4 images), empty/, cat.jpg; <tmp>/secret.jpg outside."""
    data = tmp_path / "data"
    for folder, names in {
        "two": ["b.jpg", "a.png", "notes.txt"],
        "four": ["1.jpg", "2.jpg", "3.jpg", "4.jpg"],
        "empty": [],
    }.items():
        (data / folder).mkdir(parents=True)
        for name in names:
            (data / folder / name).write_bytes(b"x")
    (data / "cat.jpg").write_bytes(b"x")
    (tmp_path / "secret.jpg").write_bytes(b"x")
    return data


@pytest.fixture
def settings(tmp_path: Path, root: Path) -> Settings:
    return make_settings(write_pipelines(tmp_path), data_root=root)


@pytest.fixture
async def api(settings: Settings, fake_server: fakeredis.FakeServer) -> AsyncIterator[httpx.AsyncClient]:
    async with running(create_app(settings, redis_factory=fake_factory(fake_server))) as client:
        yield client


def stored_inputs(client: fakeredis.FakeRedis, job_id: str) -> list[Any]:
    total = int(client.hget(keys.job(job_id), "total"))
    return [codecs.decode(client.hget(keys.item(job_id, i), keys.INPUT_FIELD)) for i in range(total)]


def no_job_written(client: fakeredis.FakeRedis) -> bool:
    return not client.keys("dlpipe:job:*") and not client.keys("dlpipe:item:*")


async def test_an_image_url_is_queued_as_is_and_is_its_source(
    api: httpx.AsyncClient, sync_redis: fakeredis.FakeRedis
) -> None:
    url = "https://images.example/photos/cat.jpg?size=large"
    response = await api.post(URL, json={"inputs": [{"image_url": url}, {"image_base64": OK}]})
    assert response.status_code == 202, response.text
    view = response.json()
    assert stored_inputs(sync_redis, view["id"]) == [{"image_url": url}, {"image": b"\xff\xd8image"}]
    assert [o["source"] for o in view["outputs"]] == [url, None]
    assert (await api.get(f"/v1/jobs/{view['id']}")).json() == view


async def test_a_path_to_a_file_is_queued_relative_to_the_root(
    api: httpx.AsyncClient, sync_redis: fakeredis.FakeRedis, root: Path
) -> None:
    response = await api.post(
        URL, json={"inputs": [{"path": "cat.jpg"}, {"path": str(root / "two" / "b.jpg")}]}
    )
    assert response.status_code == 202, response.text
    view = response.json()
    assert stored_inputs(sync_redis, view["id"]) == [{"path": "cat.jpg"}, {"path": "two/b.jpg"}]
    assert [o["source"] for o in view["outputs"]] == ["cat.jpg", "two/b.jpg"]


async def test_a_folder_is_one_input_per_image_in_name_order(
    api: httpx.AsyncClient, sync_redis: fakeredis.FakeRedis
) -> None:
    response = await api.post(URL, json={"inputs": [{"image_base64": OK}, {"path": "two/"}]})
    assert response.status_code == 202, response.text
    view = response.json()
    assert view["progress"] == {"done": 0, "total": 3}
    assert stored_inputs(sync_redis, view["id"]) == [
        {"image": b"\xff\xd8image"},
        {"path": "two/a.png"},
        {"path": "two/b.jpg"},
    ]
    assert [(o["index"], o["source"]) for o in view["outputs"]] == [
        (0, None),
        (1, "two/a.png"),
        (2, "two/b.jpg"),
    ]
    assert json.loads(sync_redis.hget(keys.job(view["id"]), "sources")) == [None, "two/a.png", "two/b.jpg"]
    assert sync_redis.xlen(keys.stream("cpu.img.pre")) == 3


async def test_jobs_without_named_inputs_store_no_sources(
    api: httpx.AsyncClient, sync_redis: fakeredis.FakeRedis
) -> None:
    response = await api.post(URL, json={"inputs": [{"image_base64": OK}]})
    assert response.status_code == 202
    assert sync_redis.hget(keys.job(response.json()["id"]), "sources") is None
    assert response.json()["outputs"][0]["source"] is None


async def test_uploaded_file_names_are_the_sources(api: httpx.AsyncClient) -> None:
    files = [
        ("files", ("IMG_0001.jpg", b"\xff\xd8a", "image/jpeg")),
        ("files", ("dog.png", b"\x89PNG", "image/png")),
    ]
    response = await api.post(URL, files=files)
    assert response.status_code == 202, response.text
    assert [o["source"] for o in response.json()["outputs"]] == ["IMG_0001.jpg", "dog.png"]


CASES: list[tuple[str, Any, str, str]] = [
    (
        "url not http",
        {"inputs": [{"image_url": "ftp://images.example/a.jpg"}]},
        "inputs[0].image_url",
        "http or https",
    ),
    ("url a file", {"inputs": [{"image_url": "file:///etc/passwd"}]}, "inputs[0].image_url", "http or https"),
    ("url without host", {"inputs": [{"image_url": "https:///a.jpg"}]}, "inputs[0].image_url", "no host"),
    ("url relative", {"inputs": [{"image_url": "/photos/a.jpg"}]}, "inputs[0].image_url", "http or https"),
    (
        "url too long",
        {"inputs": [{"image_url": "https://a.example/" + "x" * 2048}]},
        "inputs[0].image_url",
        "longer than 2048",
    ),
    (
        "url with credentials",
        {"inputs": [{"image_url": "https://user:pw@a.example/x.jpg"}]},
        "inputs[0].image_url",
        "credentials",
    ),
    (
        "url with a space",
        {"inputs": [{"image_url": "https://a.example/a b.jpg"}]},
        "inputs[0].image_url",
        "whitespace",
    ),
    (
        "url bad port",
        {"inputs": [{"image_url": "https://a.example:99999/x"}]},
        "inputs[0].image_url",
        "not a valid URL",
    ),
    ("url not a string", {"inputs": [{"image_url": 5}]}, "inputs[0].image_url", "string"),
    (
        "url and path",
        {"inputs": [{"image_url": "https://a.example/x.jpg", "path": "cat.jpg"}]},
        "inputs[0]",
        "exactly one of image_base64, image_url or path",
    ),
    ("all null", {"inputs": [{"image_base64": None, "image_url": None}]}, "inputs[0]", "got none"),
    ("path up and out", {"inputs": [{"path": "../secret.jpg"}]}, "inputs[0].path", "outside the data root"),
    (
        "path absolute elsewhere",
        {"inputs": [{"path": "/etc/passwd"}]},
        "inputs[0].path",
        "outside the data root",
    ),
    (
        "path missing",
        {"inputs": [{"image_base64": OK}, {"path": "nope.jpg"}]},
        "inputs[1].path",
        "no such file",
    ),
    ("path empty", {"inputs": [{"path": ""}]}, "inputs[0].path", "empty path"),
    ("path NUL", {"inputs": [{"path": "cat.jpg\u0000.png"}]}, "inputs[0].path", "NUL"),
    ("path whitespace", {"inputs": [{"path": "\u3000\ufeff"}]}, "inputs[0].path", "empty path"),
    (
        "path name too long",
        {"inputs": [{"path": "two/" + "n" * 300}]},
        "inputs[0].path",
        "File name too long",
    ),
    (
        "url not ASCII",
        {"inputs": [{"image_url": "https://a.example/caf\u00e9.jpg"}]},
        "inputs[0].image_url",
        "percent-encode",
    ),
    (
        "base64 padded wrong",
        {"inputs": [{"image_base64": "QUJD="}]},
        "inputs[0].image_base64",
        "not valid base64",
    ),
    ("folder without images", {"inputs": [{"path": "empty"}]}, "inputs[0].path", "holds no images"),
    ("folder over the cap", {"inputs": [{"path": "four"}]}, "inputs[0].path", f"at most {MAX_INPUTS} inputs"),
    (
        "folder over the cap with others",
        {"inputs": [{"path": "two"}, {"image_base64": OK}, {"image_base64": OK}]},
        "inputs[0].path",
        "more images than this job can take",
    ),
    (
        "folder over the cap after others",
        {"inputs": [{"image_base64": OK}, {"image_base64": OK}, {"path": "two"}]},
        "inputs[2].path",
        "more images than this job can take",
    ),
]


@pytest.mark.parametrize(("body", "field", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_invalid_image_inputs_are_422_naming_the_field(
    api: httpx.AsyncClient, sync_redis: fakeredis.FakeRedis, body: Any, field: str, fragment: str
) -> None:
    await assert_422_naming(api, URL, field, fragment, sync_redis, json=body)


async def test_a_symlink_out_of_the_root_is_422(
    api: httpx.AsyncClient, sync_redis: fakeredis.FakeRedis, root: Path
) -> None:
    (root / "escape.jpg").symlink_to(root.parent / "secret.jpg")
    (root / "elsewhere").symlink_to(root.parent)
    for path in ("escape.jpg", "elsewhere", "elsewhere/secret.jpg"):
        response = await api.post(URL, json={"inputs": [{"path": path}]})
        assert response.status_code == 422, (path, response.text)
        assert response.json() == {
            "detail": "inputs[0].path: outside the data root",
            "field": "inputs[0].path",
        }
    assert no_job_written(sync_redis)


async def test_paths_are_refused_when_no_data_root_is_set(
    tmp_path: Path, fake_server: fakeredis.FakeServer, root: Path
) -> None:
    settings = make_settings(write_pipelines(tmp_path))
    assert settings.data_root is None
    async with running(create_app(settings, redis_factory=fake_factory(fake_server))) as client:
        response = await client.post(URL, json={"inputs": [{"path": str(root / "cat.jpg")}]})
    assert response.status_code == 422
    assert response.json() == {
        "detail": "inputs[0].path: path inputs are disabled: DLPIPE_DATA_ROOT is not set",
        "field": "inputs[0].path",
    }


async def test_a_folder_of_a_thousand_images_fills_a_job_and_one_more_is_too_many(
    tmp_path: Path, fake_server: fakeredis.FakeServer, client: fakeredis.FakeRedis, root: Path
) -> None:
    folder = root / "thousand"
    folder.mkdir()
    for i in range(1000):
        (folder / f"img_{i:04d}.png").write_bytes(b"x")
    settings = make_settings(write_pipelines(tmp_path), data_root=root, max_inputs_per_job=1000)
    async with running(create_app(settings, redis_factory=fake_factory(fake_server))) as api:
        response = await api.post(URL, json={"inputs": [{"path": "thousand"}]})
        assert response.status_code == 202, response.text
        view = response.json()
        assert view["progress"]["total"] == 1000
        assert [o["source"] for o in view["outputs"]] == [f"thousand/img_{i:04d}.png" for i in range(1000)]
        assert client.xlen(keys.stream("cpu.img.pre")) == 1000  # every image its own item
        too_many = await api.post(URL, json={"inputs": [{"path": "thousand"}, {"path": "cat.jpg"}]})
        assert too_many.status_code == 422 and too_many.json()["field"] == "inputs[0].path"
        (folder / "img_1000.png").write_bytes(b"x")
        too_many = await api.post(URL, json={"inputs": [{"path": "thousand"}]})
        assert too_many.status_code == 422 and "at most 1000 inputs per job" in too_many.json()["detail"]


async def test_the_pipeline_and_openapi_describe_the_three_image_fields(api: httpx.AsyncClient) -> None:
    info = (await api.get("/v1/pipelines/img")).json()
    assert info["input"]["json_fields"] == ["image_base64", "image_url", "path"]
    schema = (await api.get("/openapi.json")).json()["components"]["schemas"]["ImageInput"]
    assert [choice["required"] for choice in schema["oneOf"]] == [["image_base64"], ["image_url"], ["path"]]
    assert {name: prop["type"] for name, prop in schema["properties"].items()} == {
        "image_base64": ["string", "null"],
        "image_url": ["string", "null"],
        "path": ["string", "null"],
    }
    assert "DLPIPE_DATA_ROOT" in schema["properties"]["path"]["description"]
    assert schema["additionalProperties"] is False and "required" not in schema


def test_job_views_give_every_output_its_source_pending_or_done() -> None:
    job = {
        "id": "j",
        "pipeline": "img",
        "status": "running",
        "created_at": "1",
        "total": "3",
        "done": "1",
        "sources": json.dumps(["a/1.jpg", None, "https://x.example/2.jpg"]),
    }
    done = ItemOutput(index=0, status=ItemStatus.succeeded, result={"ok": 1}).model_dump_json()
    view = job_view_from_redis(job, {b"0": done.encode()})
    assert [(o.status.value, o.source) for o in view.outputs] == [
        ("succeeded", "a/1.jpg"),
        ("pending", None),
        ("pending", "https://x.example/2.jpg"),
    ]
    del job["sources"]
    assert [o.source for o in job_view_from_redis(job, {}).outputs] == [None, None, None]
