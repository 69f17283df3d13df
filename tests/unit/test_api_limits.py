"""What a caller may send and who may call, against fakeredis: the body cap (413), bad inputs
(422 naming the field or header), deadlines as submitted, cancel's answers, API keys (401).
After every refusal the API still serves: the next good request is accepted."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import fakeredis
import httpx
import pytest
from starlette.exceptions import HTTPException

from services.api import admission
from services.api.app import create_app
from shared import keys
from shared.redis import scripts
from shared.settings import Settings
from tests.support.api import (
    IMG_AND_TXT_YAML,
    MAX_INPUTS,
    b64,
    fake_factory,
    job_count,
    make_settings,
    running,
    write_pipelines,
)

pytestmark = pytest.mark.anyio

URL = "/v1/pipelines/img/jobs"
GOOD = {"inputs": [{"image_base64": b64(b"\xff\xd8image")}]}
MAX_BODY = 4096
KEYS = ("first-key-0123456789", "second-key-abcdefgh")


def _settings(tmp_path: Path, **overrides: Any) -> Settings:
    return make_settings(write_pipelines(tmp_path, IMG_AND_TXT_YAML), max_body_bytes=MAX_BODY, **overrides)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return _settings(tmp_path)


@pytest.fixture
async def api(settings: Settings, fake_server: fakeredis.FakeServer) -> AsyncIterator[httpx.AsyncClient]:
    async with running(create_app(settings, redis_factory=fake_factory(fake_server))) as client:
        yield client


async def assert_still_serving(api: httpx.AsyncClient, headers: dict[str, str] | None = None) -> None:
    response = await api.post(URL, json=GOOD, headers=headers)
    assert response.status_code == 202, response.text
    assert (await api.get(response.headers["location"], headers=headers)).status_code == 200


# -- the body cap ---------------------------------------------------------------------------


async def test_a_body_over_the_cap_by_content_length_is_413_unread(
    api: httpx.AsyncClient, sync_redis: fakeredis.FakeRedis
) -> None:
    big = {"inputs": [{"image_base64": b64(b"x" * MAX_BODY)}]}
    response = await api.post(URL, json=big)
    assert response.status_code == 413
    assert response.json() == {
        "detail": f"request body larger than {MAX_BODY} bytes (DLPIPE_MAX_BODY_BYTES)",
        "field": "body",
    }
    files = [("files", ("a.jpg", b"x" * (MAX_BODY + 1), "image/jpeg"))]
    assert (await api.post(URL, files=files)).status_code == 413
    assert job_count(sync_redis) == 0
    await assert_still_serving(api)


async def test_a_chunked_body_is_counted_as_it_arrives_and_cut_off_at_the_cap(
    api: httpx.AsyncClient, sync_redis: fakeredis.FakeRedis
) -> None:
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        yield b'{"inputs": [{"image_base64": "'
        for _ in range(100):  # 100 KiB in all, far over the 4 KiB cap
            sent += 1
            yield b"A" * 1024
        yield b'"}]}'

    response = await api.post(URL, content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413, response.text
    assert "DLPIPE_MAX_BODY_BYTES" in response.json()["detail"]
    assert sent <= 5  # reading stopped once the cap was passed: the rest was never pulled
    assert job_count(sync_redis) == 0
    await assert_still_serving(api)


async def test_a_chunked_body_under_the_cap_is_accepted(api: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        body = json.dumps(GOOD).encode()
        for start in range(0, len(body), 7):
            yield body[start : start + 7]

    response = await api.post(URL, content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 202, response.text


# -- bad inputs: 422 naming what, then the next request goes through ------------------------

BAD: list[tuple[str, str, dict[str, Any], dict[str, str], str, str]] = [
    (
        "too many inputs",
        URL,
        {"inputs": [GOOD["inputs"][0]] * (MAX_INPUTS + 1)},
        {},
        "inputs",
        f"at most {MAX_INPUTS} per job",
    ),
    ("timeout_s zero", URL, {**GOOD, "timeout_s": 0}, {}, "timeout_s", "more than 0"),
    ("timeout_s negative", URL, {**GOOD, "timeout_s": -3}, {}, "timeout_s", "more than 0"),
    ("timeout_s text", URL, {**GOOD, "timeout_s": "soon"}, {}, "timeout_s", "number of seconds"),
    ("timeout_s bool", URL, {**GOOD, "timeout_s": True}, {}, "timeout_s", "number of seconds"),
    ("timeout_s as text in JSON", URL, {**GOOD, "timeout_s": "30"}, {}, "timeout_s", "number of seconds"),
    ("timeout_s past the job TTL", URL, {**GOOD, "timeout_s": 86401}, {}, "timeout_s", "at most 86400"),
    ("idempotency key too long", URL, GOOD, {"Idempotency-Key": "k" * 256}, "Idempotency-Key", "1 to 255"),
    ("idempotency key blank", URL, GOOD, {"Idempotency-Key": " "}, "Idempotency-Key", "printable ASCII"),
    (
        "text over the input cap",
        "/v1/pipelines/txt/jobs",
        {"inputs": [{"text": "é" * 40}]},
        {},
        "inputs[0].text",
        "bytes",
    ),
]


@pytest.mark.parametrize(
    ("url", "body", "headers", "field", "words"), [c[1:] for c in BAD], ids=[c[0] for c in BAD]
)
async def test_bad_requests_are_422_naming_the_field_and_the_api_goes_on(
    api: httpx.AsyncClient,
    sync_redis: fakeredis.FakeRedis,
    url: str,
    body: dict[str, Any],
    headers: dict[str, str],
    field: str,
    words: str,
) -> None:
    response = await api.post(url, json=body, headers=headers)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    assert words in response.json()["detail"]
    assert job_count(sync_redis) == 0
    await assert_still_serving(api)


async def test_timeout_s_sets_the_jobs_deadline(
    api: httpx.AsyncClient, sync_redis: fakeredis.FakeRedis
) -> None:
    response = await api.post(URL, json={**GOOD, "timeout_s": 2.5})
    assert response.status_code == 202, response.text
    view = response.json()
    record = sync_redis.hgetall(keys.job(view["id"]))
    assert record[b"timeout_s"] == b"2.5"
    assert int(record[b"deadline"]) == int(record[b"created_at"]) + 2500
    assert (await api.get(response.headers["location"])).json()["deadline_at"] == view["deadline_at"]
    assert view["deadline_at"] is not None
    # Multipart carries it as a text field; no timeout_s, no deadline.
    files = [("files", ("a.jpg", b"\xff\xd8x", "image/jpeg"))]
    response = await api.post(URL, files=files, data={"timeout_s": "30"})
    assert response.status_code == 202, response.text
    assert sync_redis.hget(keys.job(response.json()["id"]), "timeout_s") == b"30"
    for text in ("later", "1_0", " 30", "inf"):  # a number as JSON writes one, nothing else
        response = await api.post(URL, files=files, data={"timeout_s": text})
        assert response.status_code == 422 and response.json()["field"] == "timeout_s", text
    plain = (await api.post(URL, json=GOOD)).json()
    assert plain["deadline_at"] is None
    assert sync_redis.hget(keys.job(plain["id"]), "deadline") is None


# -- cancel ---------------------------------------------------------------------------------


async def test_cancel_answers_404_for_no_job_and_409_once_ended(
    api: httpx.AsyncClient, sync_redis: fakeredis.FakeRedis
) -> None:
    for job_id in ("0" * 32, "bad:id!"):
        response = await api.post(f"/v1/jobs/{job_id}/cancel")
        assert response.status_code == 404 and response.json()["detail"].startswith("no job")
    job_id = (await api.post(URL, json={"inputs": [GOOD["inputs"][0]] * 3})).json()["id"]
    response = await api.post(f"/v1/jobs/{job_id}/cancel")
    assert response.status_code == 200, response.text
    view = response.json()
    assert view["status"] == "canceled" and view["completed_at"] is not None
    assert [o["status"] for o in view["outputs"]] == ["canceled"] * 3
    assert view["error"] == "canceled: 3 of 3 items had not finished"
    assert sync_redis.get(keys.backlog("img")) == b"0"
    assert not sync_redis.exists(keys.item(job_id, 0))  # the inputs that will never run are freed
    again = await api.post(f"/v1/jobs/{job_id}/cancel")
    assert again.status_code == 409
    assert again.json()["detail"] == f"job {job_id!r} has already ended: canceled"
    events = [f for _, f in sync_redis.xrange(keys.EVENTS) if f[b"job"] == job_id.encode()]
    assert [e[b"type"] for e in events] == [b"job.completed"]
    sync_redis.hset(keys.job(job_id), "status", "succeeded")
    assert "succeeded" in (await api.post(f"/v1/jobs/{job_id}/cancel")).json()["detail"]
    await assert_still_serving(api)


# -- admission: the script ------------------------------------------------------------------


def test_admission_counts_open_grants_and_lets_them_lapse(sync_redis: fakeredis.FakeRedis) -> None:
    def admit(now: int, grant: str, items: int, cap: int = 10) -> list[int]:
        reply = sync_redis.eval(
            scripts.ADMIT, 2, keys.backlog("p"), keys.admissions("p"), now, 1000, cap, grant, items
        )
        return [int(x) for x in reply]

    sync_redis.set(keys.backlog("p"), 4)
    assert admit(100, "a", 5) == [1, 4]  # 4 < 10: granted, and the grant counts from now on
    assert admit(200, "b", 3) == [1, 9]  # 4 + 5 < 10: granted (may take it to 12: one job over)
    assert admit(300, "c", 1) == [0, 12]  # 4 + 5 + 3: refused
    # The grants lapse (their jobs were never written): the room comes back by itself.
    assert admit(1250, "d", 1) == [1, 4]
    # A counter that went below zero (lost updates) counts as zero.
    sync_redis.set(keys.backlog("p"), -7)
    sync_redis.delete(keys.admissions("p"))
    assert admit(5000, "e", 1) == [1, 0]


async def test_a_pending_idempotency_claim_makes_a_second_request_wait_then_409(
    sync_redis: fakeredis.FakeRedis, fake_server: fakeredis.FakeServer
) -> None:
    client = fakeredis.FakeAsyncRedis(server=fake_server)
    first = await admission.claim(client, "anon", "key-1", "f1", "job-1")
    assert isinstance(first, admission.Claim)
    with pytest.raises(HTTPException, match="still in progress") as refused:
        await admission.claim(client, "anon", "key-1", "f1", "job-2", wait_s=0)
    assert refused.value.status_code == 409
    with pytest.raises(admission.InvalidRequest, match="different request"):
        await admission.claim(client, "anon", "key-1", "f2", "job-2", wait_s=0)
    # Released (its job was never written): the key is free for the next request.
    await admission.release(client, first)
    assert isinstance(await admission.claim(client, "anon", "key-1", "f2", "job-3"), admission.Claim)
    await client.aclose()


# -- API keys -------------------------------------------------------------------------------


@pytest.fixture
async def keyed(tmp_path: Path, fake_server: fakeredis.FakeServer) -> AsyncIterator[httpx.AsyncClient]:
    settings = _settings(tmp_path, api_keys=" , ".join(KEYS))
    async with running(create_app(settings, redis_factory=fake_factory(fake_server))) as client:
        yield client


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.parametrize(
    ("headers", "error"),
    [
        ({}, None),
        (bearer("not-a-key"), "invalid_token"),
        (bearer(KEYS[0][:-1]), "invalid_token"),
        ({"Authorization": f"Basic {KEYS[0]}"}, None),
    ],
    ids=["missing", "wrong", "prefix of a key", "not bearer"],
)
async def test_without_a_right_key_every_v1_route_is_401(
    keyed: httpx.AsyncClient, sync_redis: fakeredis.FakeRedis, headers: dict[str, str], error: str | None
) -> None:
    calls = [
        keyed.post(URL, json=GOOD, headers=headers),
        keyed.get("/v1/jobs/" + "0" * 32, headers=headers),
        keyed.post("/v1/jobs/" + "0" * 32 + "/cancel", headers=headers),
        keyed.get("/v1/pipelines", headers=headers),
        keyed.get("/v1/pipelines/img", headers=headers),
    ]
    for call in calls:
        response = await call
        assert response.status_code == 401, response.text
        challenge = response.headers["www-authenticate"]
        assert challenge.startswith('Bearer realm="dlpipe"')
        assert (f'error="{error}"' in challenge) == (error is not None)
        expected = "invalid API key" if error else "missing API key: send `Authorization: Bearer <key>`"
        assert response.json()["detail"] == expected
    assert job_count(sync_redis) == 0
    await assert_still_serving(keyed, bearer(KEYS[1]))


async def test_any_configured_key_is_let_in(keyed: httpx.AsyncClient) -> None:
    for key in KEYS:
        await assert_still_serving(keyed, bearer(key))
        assert (await keyed.get("/v1/pipelines", headers=bearer(key))).status_code == 200


async def test_health_docs_and_schema_stay_open(keyed: httpx.AsyncClient) -> None:
    assert (await keyed.get("/healthz")).status_code == 200
    assert (await keyed.get("/readyz")).status_code == 503  # not 401: no workers here, but it answers
    assert (await keyed.get("/docs")).status_code == 200
    schema = (await keyed.get("/openapi.json")).json()
    scheme = schema["components"]["securitySchemes"]["apiKey"]
    assert scheme["type"] == "http" and scheme["scheme"] == "bearer"
    assert schema["paths"]["/v1/pipelines/img/jobs"]["post"]["security"] == [{"apiKey": []}]
    assert schema["paths"]["/v1/jobs/{job_id}/cancel"]["post"]["security"] == [{"apiKey": []}]
    assert "security" not in schema["paths"]["/healthz"]["get"]
    assert "security" not in schema["paths"]["/readyz"]["get"]


async def test_idempotency_keys_belong_to_their_caller(keyed: httpx.AsyncClient) -> None:
    same = {"Idempotency-Key": "order-17"}
    one = await keyed.post(URL, json=GOOD, headers={**same, **bearer(KEYS[0])})
    two = await keyed.post(URL, json=GOOD, headers={**same, **bearer(KEYS[1])})
    again = await keyed.post(URL, json=GOOD, headers={**same, **bearer(KEYS[0])})
    assert [r.status_code for r in (one, two, again)] == [202, 202, 202]
    assert one.json()["id"] != two.json()["id"]
    assert again.json()["id"] == one.json()["id"]
