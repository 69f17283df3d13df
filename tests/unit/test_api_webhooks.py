"""The API's side of webhooks, against fakeredis: `webhook_events`, internal addresses refused
at submit, the delivery shown by GET /v1/jobs/{id}, and POST .../webhook/redeliver (and its
limit: one per job per DLPIPE_WEBHOOK_REDELIVER_INTERVAL_S)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import fakeredis
import httpx
import pytest

from services.api.app import create_app
from shared import keys
from shared import webhooks as state
from shared.messages import now_ms
from shared.redis import scripts
from shared.settings import Settings
from tests.support.api import b64, fake_factory, running
from tests.support.waiting import wait_until_async

pytestmark = pytest.mark.anyio

URL = "/v1/pipelines/img/jobs"
INPUTS = [{"image_base64": b64(b"\xff\xd8image")}]
HOOK = "https://hooks.example.com/dlpipe"


async def submit(api: httpx.AsyncClient, **fields: Any) -> httpx.Response:
    return await api.post(URL, json={"inputs": INPUTS, **fields})


async def test_webhook_events_are_stored_in_canonical_order(api: httpx.AsyncClient, sync_redis: Any) -> None:
    response = await submit(api, webhook=HOOK, webhook_events=["completed", "started", "progress", "started"])
    assert response.status_code == 202, response.text
    hook = response.json()["webhook"]
    assert hook == {
        "url": HOOK,
        "events": ["started", "progress", "completed"],
        "event": None,
        "id": None,
        "state": None,
        "attempts": [],
        "last_status_code": None,
        "last_error": None,
        "next_attempt_at": None,
    }
    job_id = response.json()["id"]
    assert sync_redis.hget(keys.job(job_id), "webhook_events") == b"started,progress,completed"
    assert (await api.get(f"/v1/jobs/{job_id}")).json()["webhook"] == hook
    plain = (await submit(api, webhook=HOOK)).json()
    assert plain["webhook"]["events"] == ["completed"]
    assert (await submit(api)).json()["webhook"] is None


@pytest.mark.parametrize(
    ("fields", "field", "says"),
    [
        ({"webhook": HOOK, "webhook_events": ["started", "finished"]}, "webhook_events[1]", "not an event"),
        ({"webhook": HOOK, "webhook_events": []}, "webhook_events", "non-empty"),
        ({"webhook": HOOK, "webhook_events": "started"}, "webhook_events", "non-empty list"),
        ({"webhook": HOOK, "webhook_events": [1]}, "webhook_events[0]", "not an event"),
        ({"webhook_events": ["completed"]}, "webhook_events", "without a webhook"),
    ],
)
async def test_bad_webhook_events_are_refused_naming_the_field(
    api: httpx.AsyncClient, fields: dict[str, Any], field: str, says: str
) -> None:
    response = await submit(api, **fields)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field and says in response.json()["detail"]


async def test_webhook_events_in_a_multipart_request(api: httpx.AsyncClient) -> None:
    files = [("files", ("a.jpg", b"\xff\xd8image", "image/jpeg"))]
    ok = await api.post(URL, files=files, data={"webhook": HOOK, "webhook_events": "started, completed"})
    assert ok.status_code == 202, ok.text
    assert ok.json()["webhook"]["events"] == ["started", "completed"]
    bad = await api.post(URL, files=files, data={"webhook": HOOK, "webhook_events": "started,bogus"})
    assert bad.status_code == 422 and bad.json()["field"] == "webhook_events[1]"


INTERNAL = [
    "http://127.0.0.1:8080/h",
    "http://127.1/h",
    "http://0x7f000001/h",
    "http://2130706433/h",
    "http://0177.0.0.1/h",
    "http://[::1]/h",
    "http://[::ffff:127.0.0.1]/h",
    "http://10.0.0.7/h",
    "http://169.254.169.254/latest/meta-data",
    "http://100.64.0.1/h",
    "http://0.0.0.0/h",
    "http://localhost:9/h",
    "http://api.localhost/h",
    "http://224.0.0.1/h",
    "http://999.1.1.1/h",
]


@pytest.mark.parametrize("url", INTERNAL)
async def test_internal_webhook_addresses_are_refused_at_submit(api: httpx.AsyncClient, url: str) -> None:
    response = await submit(api, webhook=url)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "webhook"


async def test_internal_webhook_addresses_are_allowed_when_configured(
    settings: Settings, fake_server: fakeredis.FakeServer
) -> None:
    allowing = settings.model_copy(update={"webhook_allow_private": True})
    async with running(create_app(allowing, redis_factory=fake_factory(fake_server))) as client:
        for url in ("http://127.1:9/h", "http://localhost:9/h", "http://[::1]:9/h"):
            response = await submit(client, webhook=url)
            assert response.status_code == 202, response.text


def make_delivery(client: Any, job_id: str, *finishes: tuple[str, str, str]) -> str:
    """A delivery of the job's completion, then attempts that end as (state, status, error)."""
    delivery = state.delivery_id(job_id, "1700000000000-0")
    client.eval(
        scripts.WEBHOOK_CREATE,
        2,
        keys.webhook(delivery),
        keys.job_webhook(job_id),
        delivery,
        job_id,
        "job.completed",
        1_700_000_000_000,
        now_ms(),
        3600,
        now_ms(),
        "1",
    )
    for finish in finishes:
        attempt(client, job_id, delivery, 1, *finish)
    return delivery


def attempt(
    client: Any, job_id: str, delivery: str, round_: int, new_state: str, status: str, error: str
) -> None:
    """One attempt of the round, as the notifier makes it (the same scripts), ending as given."""
    dkeys = [keys.webhook(delivery), keys.webhook_attempts(delivery), keys.job_webhook(job_id)]
    client.eval(scripts.WEBHOOK_BEGIN, 3, *dkeys, round_, now_ms(), 3600)
    record = state.Attempt(now_ms(), 12, int(status) if status else None, error or None).to_json()
    nxt = str(now_ms() + 60_000) if new_state == "failed" else ""
    gone = "HTTP 410 Gone" if status == "410" else ""
    client.eval(
        scripts.WEBHOOK_FINISH,
        5,
        *dkeys,
        keys.job(job_id),
        keys.job_outputs(job_id),
        round_,
        new_state,
        record,
        status,
        error,
        nxt,
        3600,
        now_ms(),
        gone,
    )


def gone_again(client: Any, job_id: str, delivery: str) -> None:
    """The notifier sends the round just queued and the receiver answers 410: dead again at once."""
    round_ = int(client.hget(keys.webhook(delivery), "round"))
    attempt(client, job_id, delivery, round_, "dead", "410", "HTTP 410")


def redeliveries(client: Any) -> int:
    return sum(entry[b"type"] == b"webhook.redeliver" for _, entry in client.xrange(keys.EVENTS))


async def test_get_shows_the_delivery_and_redeliver_sends_a_dead_one_again(
    api: httpx.AsyncClient, sync_redis: Any
) -> None:
    job_id = (await submit(api, webhook=HOOK)).json()["id"]
    redeliver = f"/v1/jobs/{job_id}/webhook/redeliver"
    nothing_yet = await api.post(redeliver)
    assert nothing_yet.status_code == 409
    assert "no webhook event has been sent yet" in nothing_yet.json()["detail"]
    delivery = make_delivery(
        sync_redis, job_id, ("failed", "500", "HTTP 500"), ("dead", "", "cannot connect to hooks.example.com")
    )
    hook = (await api.get(f"/v1/jobs/{job_id}")).json()["webhook"]
    assert hook["state"] == "dead" and hook["id"] == delivery and hook["event"] == "job.completed"
    assert [(a["status_code"], a["error"]) for a in hook["attempts"]] == [
        (500, "HTTP 500"),
        (None, "cannot connect to hooks.example.com"),
    ]
    assert hook["last_status_code"] is None and hook["last_error"].startswith("cannot connect")
    assert hook["next_attempt_at"] is None and hook["attempts"][0]["duration_ms"] == 12
    response = await api.post(redeliver)
    assert response.status_code == 202, response.text
    assert response.json()["state"] == "pending" and response.json()["id"] == delivery
    [(_, entry)] = sync_redis.xrange(keys.EVENTS)
    assert entry == {
        b"job": job_id.encode(),
        b"type": b"webhook.redeliver",
        b"delivery": delivery.encode(),
        b"round": b"2",
        b"at": entry[b"at"],
    }
    too_soon = await api.post(redeliver)
    assert too_soon.status_code == 429 and too_soon.headers["retry-after"] == "5"  # the default interval
    sync_redis.delete(keys.webhook_redelivered(job_id))  # as if the interval had passed
    again = await api.post(redeliver)  # still pending: the notifier has not taken it
    assert again.status_code == 409 and "still in flight (pending)" in again.json()["detail"]


async def test_redeliver_refuses_a_delivery_in_flight_and_jobs_without_a_webhook(
    api: httpx.AsyncClient, sync_redis: Any
) -> None:
    job_id = (await submit(api, webhook=HOOK)).json()["id"]
    make_delivery(sync_redis, job_id, ("failed", "503", "HTTP 503"))
    hook = (await api.get(f"/v1/jobs/{job_id}")).json()["webhook"]
    assert hook["state"] == "failed" and hook["next_attempt_at"] is not None
    response = await api.post(f"/v1/jobs/{job_id}/webhook/redeliver")
    assert response.status_code == 409 and "failed" in response.json()["detail"]
    quiet = (await submit(api)).json()["id"]
    no_hook = await api.post(f"/v1/jobs/{quiet}/webhook/redeliver")
    assert no_hook.status_code == 404 and "has no webhook" in no_hook.json()["detail"]
    assert (await api.post("/v1/jobs/nope/webhook/redeliver")).status_code == 404
    assert (await api.post("/v1/jobs/bad%20id/webhook/redeliver")).status_code == 404


async def test_the_schema_documents_webhook_events_and_redelivery(api: httpx.AsyncClient) -> None:
    schema = (await api.get("/openapi.json")).json()
    request = schema["components"]["schemas"]["ImageJobRequest"]["properties"]["webhook_events"]
    assert "progress" in str(request)
    assert "/v1/jobs/{job_id}/webhook/redeliver" in schema["paths"]
    too_soon = schema["paths"]["/v1/jobs/{job_id}/webhook/redeliver"]["post"]["responses"]["429"]
    assert "DLPIPE_WEBHOOK_REDELIVER_INTERVAL_S" in too_soon["description"]
    assert "Retry-After" in too_soon["headers"]
    assert "WebhookView" in schema["components"]["schemas"]


@pytest.fixture
def limited(settings: Settings, fake_server: fakeredis.FakeServer, request: pytest.FixtureRequest) -> Any:
    """The app with DLPIPE_WEBHOOK_REDELIVER_INTERVAL_S set to the test's parameter."""
    interval = settings.model_copy(update={"webhook_redeliver_interval_s": request.param})
    return running(create_app(interval, redis_factory=fake_factory(fake_server)))


async def dead_job(api: httpx.AsyncClient, sync_redis: Any) -> tuple[str, str]:
    job_id = (await submit(api, webhook=HOOK)).json()["id"]
    return job_id, make_delivery(sync_redis, job_id, ("dead", "410", "HTTP 410"))


def refused_too_soon(response: httpx.Response, interval_s: float) -> bool:
    wait_s = int(response.headers.get("retry-after", "0"))
    return (
        response.status_code == 429
        and 1 <= wait_s <= max(1, interval_s)
        and "DLPIPE_WEBHOOK_REDELIVER_INTERVAL_S" in response.json()["detail"]
    )


@pytest.mark.parametrize("limited", [60.0], indirect=True)
async def test_fifty_concurrent_redeliveries_of_one_job_make_one(limited: Any, sync_redis: Any) -> None:
    async with limited as api:
        job_id, delivery = await dead_job(api, sync_redis)
        answers = await asyncio.gather(*(api.post(f"/v1/jobs/{job_id}/webhook/redeliver") for _ in range(50)))
        assert sorted(a.status_code for a in answers) == [202] + [429] * 49
        assert all(refused_too_soon(a, 60) for a in answers if a.status_code == 429)
        assert redeliveries(sync_redis) == 1 and sync_redis.hget(keys.webhook(delivery), "round") == b"2"


@pytest.mark.parametrize("limited", [60.0], indirect=True)
async def test_a_receiver_answering_410_is_not_hammered_by_a_loop_of_redeliveries(
    limited: Any, sync_redis: Any
) -> None:
    async with limited as api:
        job_id, delivery = await dead_job(api, sync_redis)
        answers = []
        for _ in range(50):  # each round is sent at once and dead at once again (410)
            answers.append((await api.post(f"/v1/jobs/{job_id}/webhook/redeliver")).status_code)
            if sync_redis.hget(keys.webhook(delivery), "state") == b"pending":
                gone_again(sync_redis, job_id, delivery)
        assert answers == [202] + [429] * 49
        assert redeliveries(sync_redis) == 1


@pytest.mark.parametrize("limited", [0.3], indirect=True)
async def test_the_allowance_comes_back_after_the_interval_and_a_refusal_takes_none(
    limited: Any, sync_redis: Any
) -> None:
    async with limited as api:
        job_id = (await submit(api, webhook=HOOK)).json()["id"]
        redeliver = f"/v1/jobs/{job_id}/webhook/redeliver"
        assert (await api.post(redeliver)).status_code == 409  # nothing sent yet
        delivery = make_delivery(sync_redis, job_id, ("failed", "503", "HTTP 503"))
        assert (await api.post(redeliver)).status_code == 409  # in flight
        attempt(sync_redis, job_id, delivery, 1, "dead", "503", "HTTP 503")
        assert (await api.post(redeliver)).status_code == 202  # neither 409 took the allowance
        sent = time.monotonic()
        gone_again(sync_redis, job_id, delivery)
        refused: list[httpx.Response] = []

        async def allowed() -> httpx.Response | None:
            response = await api.post(redeliver)
            if response.status_code == 202:
                return response
            refused.append(response)
            return None

        await wait_until_async(allowed, 10, "the redelivery allowance to come back")
        assert time.monotonic() - sent >= 0.3
        assert refused and all(refused_too_soon(r, 1) for r in refused)
        assert redeliveries(sync_redis) == 2 and sync_redis.hget(keys.webhook(delivery), "round") == b"3"


@pytest.mark.parametrize("limited", [0.0], indirect=True)
async def test_no_limit_with_an_interval_of_zero(limited: Any, sync_redis: Any) -> None:
    async with limited as api:
        job_id, delivery = await dead_job(api, sync_redis)
        for _ in range(3):
            assert (await api.post(f"/v1/jobs/{job_id}/webhook/redeliver")).status_code == 202
            gone_again(sync_redis, job_id, delivery)
        assert redeliveries(sync_redis) == 3 and not sync_redis.exists(keys.webhook_redelivered(job_id))
