"""The API's side of webhooks, against fakeredis: `webhook_events`, internal addresses refused
at submit, the delivery shown by GET /v1/jobs/{id}, and POST .../webhook/redeliver."""

from __future__ import annotations

from typing import Any

import fakeredis
import httpx
import pytest

from services.api.app import create_app
from shared import keys
from shared import webhooks as state
from shared.messages import now_ms
from shared.settings import Settings
from tests.unit.test_api_fixtures import (  # noqa: F401 - fixtures
    anyio_backend,
    api,
    b64,
    fake_factory,
    fake_server,
    running,
    settings,
    sync_redis,
)

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
        "url": HOOK, "events": ["started", "progress", "completed"], "event": None, "id": None, "state": None,
        "attempts": [], "last_status_code": None, "last_error": None, "next_attempt_at": None,
    }  # fmt: skip
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
    "http://127.0.0.1:8080/h", "http://127.1/h", "http://0x7f000001/h", "http://2130706433/h",
    "http://0177.0.0.1/h", "http://[::1]/h", "http://[::ffff:127.0.0.1]/h", "http://10.0.0.7/h",
    "http://169.254.169.254/latest/meta-data", "http://100.64.0.1/h", "http://0.0.0.0/h",
    "http://localhost:9/h", "http://api.localhost/h", "http://224.0.0.1/h", "http://999.1.1.1/h",
]  # fmt: skip


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
    client.eval(state.CREATE, 2, keys.webhook(delivery), keys.job_webhook(job_id), delivery, job_id,
                "job.completed", 1_700_000_000_000, now_ms(), 3600, now_ms(), "1")  # fmt: skip
    dkeys = [keys.webhook(delivery), keys.webhook_attempts(delivery), keys.job_webhook(job_id)]
    for new_state, status, error in finishes:
        client.eval(state.BEGIN, 3, *dkeys, 1, now_ms(), 3600)
        record = state.Attempt(now_ms(), 12, int(status) if status else None, error or None).to_json()
        nxt = str(now_ms() + 60_000) if new_state == "failed" else ""
        client.eval(state.FINISH, 5, *dkeys, keys.job(job_id), keys.job_outputs(job_id), 1, new_state, record,
                    status, error, nxt, 3600, now_ms(), "")  # fmt: skip
    return delivery


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
        (500, "HTTP 500"), (None, "cannot connect to hooks.example.com")
    ]
    assert hook["last_status_code"] is None and hook["last_error"].startswith("cannot connect")
    assert hook["next_attempt_at"] is None and hook["attempts"][0]["duration_ms"] == 12
    response = await api.post(redeliver)
    assert response.status_code == 202, response.text
    assert response.json()["state"] == "pending" and response.json()["id"] == delivery
    [(_, entry)] = sync_redis.xrange(keys.EVENTS)
    assert entry == {b"job": job_id.encode(), b"type": b"webhook.redeliver", b"delivery": delivery.encode(),
                     b"round": b"2", b"at": entry[b"at"]}  # fmt: skip
    again = await api.post(redeliver)  # already pending
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
    assert "WebhookView" in schema["components"]["schemas"]

