"""A careless or hostile client, against the API in-process (fakeredis): every refusal is a 4xx
naming what, before anything is written; what is stored always renders; an error never echoes a
client's value whole; and a bug's 500 leaves the connection usable (a real uvicorn server)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import fakeredis
import httpx
import pytest
import uvicorn

from services.api.app import create_app
from shared import keys
from shared.settings import Settings
from tests.support.api import (
    IMG_AND_TXT_YAML,
    b64,
    fake_factory,
    job_count,
    make_settings,
    running,
    write_pipelines,
)

pytestmark = pytest.mark.anyio

URL = "/v1/pipelines/img/jobs"
TEXT_URL = "/v1/pipelines/txt/jobs"
IMAGE = {"image_base64": b64(b"\xff\xd8image")}
FILES = [("files", ("a.jpg", b"\xff\xd8x", "image/jpeg"))]


def _settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"max_json_values": 20_000, "max_json_body_bytes": 64 * 1024}
    values.update(overrides)
    return make_settings(write_pipelines(tmp_path, IMG_AND_TXT_YAML), **values)


@pytest.fixture
async def api(tmp_path: Path, fake_server: fakeredis.FakeServer) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(_settings(tmp_path), redis_factory=fake_factory(fake_server))
    async with running(app) as client:
        yield client


def nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


async def assert_refused(
    response: httpx.Response, status: int, field: str, words: str, redis: fakeredis.FakeRedis
) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["field"] == field, body
    assert words in body["detail"], body
    assert job_count(redis) == 0, "a refused request wrote a job"


def raw_json(text: str) -> dict[str, Any]:
    return {"content": text.encode(), "headers": {"content-type": "application/json"}}


# -- metadata: everything stored is checked before anything is written -----------------------


@pytest.mark.parametrize(
    ("metadata", "field", "words"),
    [
        (nested(300), "metadata", "nested more than 32 levels"),
        (nested(999), "metadata", "nested more than 32 levels"),
        (nested(1000), "metadata", "nested more than 32 levels"),
        (nested(5000), "metadata", "nested more than 1024 levels"),
        ('{"a":"\\ud800"}', "metadata.a", "lone surrogate"),
        ('{"\\udfff":1}', "metadata", "key that is not valid Unicode"),
        ('{"a":[1,NaN]}', "metadata.a[1]", "not a finite number"),
        ('{"a":Infinity}', "metadata.a", "not a finite number"),
        ('{"a":-1e999}', "metadata.a", "not a finite number"),
    ],
    ids=[
        "300 deep",
        "999 deep",
        "1000 deep",
        "5000 deep",
        "lone surrogate",
        "surrogate key",
        "NaN",
        "Infinity",
        "overflow",
    ],
)
async def test_metadata_json_cannot_store_is_a_422_naming_it_and_nothing_is_written(
    api: httpx.AsyncClient, sync_redis: fakeredis.FakeRedis, metadata: str, field: str, words: str
) -> None:
    body = f'{{"inputs":[{json.dumps(IMAGE)}],"metadata":{metadata}}}'
    await assert_refused(await api.post(URL, **raw_json(body)), 422, field, words, sync_redis)
    # The same metadata as a multipart field: the same refusal.
    response = await api.post(URL, files=FILES, data={"metadata": metadata})
    await assert_refused(response, 422, field, words, sync_redis)
    assert (await api.post(URL, json={"inputs": [IMAGE], "metadata": {"a": [1, 2]}})).status_code == 202


async def test_a_lone_surrogate_or_nan_anywhere_in_the_body_is_a_422_naming_it(
    api: httpx.AsyncClient, sync_redis: fakeredis.FakeRedis
) -> None:
    text = await api.post(TEXT_URL, **raw_json('{"inputs":[{"text":"ok"},{"text":"\\ud83d"}]}'))
    await assert_refused(text, 422, "inputs[1].text", "lone surrogate", sync_redis)
    timeout = await api.post(URL, **raw_json(f'{{"inputs":[{json.dumps(IMAGE)}],"timeout_s":NaN}}'))
    await assert_refused(timeout, 422, "timeout_s", "not a finite number", sync_redis)
    deep = await api.post(URL, **raw_json('{"inputs":' + "[" * 2000 + "]" * 2000 + "}"))
    await assert_refused(deep, 422, "inputs", "nested more than 1024 levels", sync_redis)


async def test_multipart_text_that_is_not_utf8_is_a_422_as_in_json(
    api: httpx.AsyncClient, sync_redis: fakeredis.FakeRedis
) -> None:
    latin1 = {"metadata": '{"name": "Andr\xe9"}'.encode("latin-1")}
    response = await api.post(URL, files=[*FILES, *[(k, (None, v)) for k, v in latin1.items()]])
    await assert_refused(response, 422, "metadata", "not valid utf-8 text", sync_redis)
    webhook = await api.post(URL, files=[*FILES, ("webhook", (None, b"https://ex\xffample.com/"))])
    await assert_refused(webhook, 422, "webhook", "not valid utf-8 text", sync_redis)
    bad_name = await api.post(URL, files=[("files", (b"caf\xe9.jpg".decode("latin-1"), b"\xff\xd8x"))])
    assert bad_name.status_code == 202  # é sent as UTF-8 by httpx: fine
    utf8 = await api.post(URL, files=[*FILES, ("metadata", (None, '{"name": "André"}'.encode()))])
    assert utf8.status_code == 202, utf8.text
    view = (await api.get(utf8.headers["location"])).json()
    assert view["metadata"] == {"name": "André"}


async def test_a_part_with_huge_headers_is_refused_early(
    api: httpx.AsyncClient, sync_redis: fakeredis.FakeRedis
) -> None:
    boundary = "b0undary"
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="a.jpg"\r\n'
    body = (head + "X-Pad: " + "p" * 40_000 + "\r\n\r\n\xff\xd8x\r\n" + f"--{boundary}--\r\n").encode(
        "latin-1"
    )
    headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
    response = await api.post(URL, content=body, headers=headers)
    await assert_refused(response, 422, "body", "Maximum header size exceeded", sync_redis)


# -- JSON bodies: refused by size and by count before they are parsed --------------------------


async def test_a_json_body_of_too_many_values_or_bytes_is_a_413(
    api: httpx.AsyncClient, sync_redis: fakeredis.FakeRedis
) -> None:
    lists = '{"inputs":[' + ",".join(["[]"] * 21_000) + "]}"
    await assert_refused(
        await api.post(URL, **raw_json(lists)), 413, "body", "DLPIPE_MAX_JSON_VALUES", sync_redis
    )
    big = json.dumps({"inputs": [{"image_base64": b64(b"\xff\xd8" + b"x" * 60_000)}]})
    await assert_refused(
        await api.post(URL, **raw_json(big)), 413, "body", "DLPIPE_MAX_JSON_BODY_BYTES", sync_redis
    )
    # A multipart body may be larger than a JSON one (the body cap is its limit).
    assert (
        await api.post(URL, files=[("files", ("a.jpg", b"\xff\xd8" + b"x" * 60, "image/jpeg"))])
    ).status_code == 202


# -- Idempotency-Key: the request as parsed, not its bytes ------------------------------------


async def test_the_same_request_with_other_whitespace_key_order_or_boundary_is_the_same_request(
    api: httpx.AsyncClient, sync_redis: fakeredis.FakeRedis
) -> None:
    key = {"Idempotency-Key": "same-request-1"}
    compact = json.dumps({"inputs": [IMAGE], "metadata": {"a": 1, "b": 2}}, separators=(",", ":"))
    spaced = '{ "metadata" : { "b" : 2, "a" : 1 },\n  "inputs" : [ ' + json.dumps(IMAGE) + " ] }"
    first = await api.post(URL, content=compact.encode(), headers={"content-type": "application/json", **key})
    again = await api.post(URL, content=spaced.encode(), headers={"content-type": "application/json", **key})
    assert first.status_code == 202 and again.status_code == 202, again.text
    assert again.json()["id"] == first.json()["id"] and again.headers["idempotent-replayed"] == "true"
    other = json.dumps({"inputs": [IMAGE], "metadata": {"a": 1, "b": 3}})
    refused = await api.post(URL, content=other.encode(), headers={"content-type": "application/json", **key})
    assert refused.status_code == 422 and refused.json()["field"] == "Idempotency-Key"

    form_key = {"Idempotency-Key": "same-form-1"}
    one = await api.post(URL, files=FILES, data={"timeout_s": "30"}, headers=form_key)
    two = await api.post(
        URL, files=FILES, data={"timeout_s": "30"}, headers=form_key
    )  # httpx: a new boundary
    assert one.status_code == two.status_code == 202 and one.json()["id"] == two.json()["id"]
    changed = [("files", ("a.jpg", b"\xff\xd8y", "image/jpeg"))]
    assert (await api.post(URL, files=changed, data={"timeout_s": "30"}, headers=form_key)).status_code == 422
    assert job_count(sync_redis) == 2


# -- what the API says back --------------------------------------------------------------------


async def test_errors_quote_a_clients_value_cut_short(api: httpx.AsyncClient) -> None:
    long_id = "a" * 10_000
    for response in (
        await api.get(f"/v1/jobs/{long_id}"),
        await api.post(f"/v1/jobs/{long_id}/cancel"),
        await api.get(f"/v1/pipelines/{long_id}"),
        await api.post(URL, content=b"x", headers={"content-type": "text/" + long_id}),
        await api.post(URL, json={"inputs": [IMAGE], long_id: 1}),
    ):
        assert 400 <= response.status_code < 500, response.text
        body = response.json()
        assert len(body["detail"]) < 400 and "characters)" in body["detail"], body["detail"][:300]
        assert body["field"] is None or len(body["field"]) <= 200


async def test_a_stored_job_that_cannot_be_rendered_is_shown_without_those_parts(
    api: httpx.AsyncClient, sync_redis: fakeredis.FakeRedis
) -> None:
    job_id = (await api.post(URL, json={"inputs": [IMAGE, IMAGE]})).json()["id"]
    # As a record written before the rules existed, and a stage's result JSON cannot hold, would be.
    sync_redis.hset(keys.job(job_id), "metadata", nested(400))
    broken = {"index": 0, "status": "succeeded", "result": {"label": "\ud800"}}
    sync_redis.hset(keys.job_outputs(job_id), "0", json.dumps(broken))
    sync_redis.hset(
        keys.job_outputs(job_id), "1", json.dumps({"index": 1, "status": "succeeded", "result": 7})
    )
    for _ in range(2):  # every read, not only the first
        response = await api.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        view = response.json()
        assert view["metadata"] is None and view["id"] == job_id
        assert view["outputs"][0]["result"] is None and "cannot be rendered" in view["outputs"][0]["error"]
        assert view["outputs"][1]["result"] == 7


# -- a bug's 500 on a real server: the keep-alive connection goes on -----------------------------


@pytest.fixture
def server_with_a_bug(tmp_path: Path, fake_server: fakeredis.FakeServer) -> Iterator[int]:
    app = create_app(_settings(tmp_path), redis_factory=fake_factory(fake_server))

    @app.get("/bug")
    async def bug() -> None:
        raise RuntimeError("a bug")

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(10)


def test_after_a_500_the_same_connection_serves_the_next_request(server_with_a_bug: int) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{server_with_a_bug}", timeout=5) as client:
        failed = client.get("/bug")
        assert failed.status_code == 500 and failed.json() == {"detail": "internal error", "field": None}
        assert failed.headers.get("connection") != "close"
        stream = failed.extensions["network_stream"]
        again = client.get("/healthz")
        assert again.status_code == 200
        assert again.extensions["network_stream"] is stream, "the connection was not reused"
