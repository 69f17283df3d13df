"""/healthz and /readyz, with heartbeats written the way workers write them."""

from __future__ import annotations

import fakeredis
import httpx
import pytest
from redis.asyncio import Redis

from services.api.app import create_app
from shared import keys
from shared.embedded_redis import free_port
from shared.heartbeat import add_heartbeat
from shared.messages import now_ms
from shared.settings import Settings
from tests.support.api import running

pytestmark = pytest.mark.anyio

CPU = [s for stage in ("cpu.img.post", "cpu.img.pre") for s in keys.stage_streams(stage)]
MODEL = keys.stage_streams("model.m1")


def beat(
    client: fakeredis.FakeRedis,
    settings: Settings,
    worker: str,
    kind: str,
    streams: list[str],
    age_ms: int = 0,
) -> None:
    pipe = client.pipeline()
    add_heartbeat(pipe, worker, kind, streams, now_ms() - age_ms, settings.worker_ttl_ms)
    pipe.execute()


def all_workers(client: fakeredis.FakeRedis, settings: Settings) -> None:
    beat(client, settings, "pre-1", "preprocess", CPU)
    beat(client, settings, "model-1", "model", MODEL)
    beat(client, settings, "notifier-1", "notifier", ["dlpipe:events"])


async def test_healthz_is_ok_without_redis(settings: Settings) -> None:
    port = free_port()
    app = create_app(settings, redis_factory=lambda url: Redis.from_url(f"redis://127.0.0.1:{port}/0"))
    async with running(app) as client:
        response = await client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


async def test_readyz_names_every_missing_stream_and_the_notifier(api: httpx.AsyncClient) -> None:
    response = await api.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable" and body["workers"] == 0
    assert body["reason"] == (
        "no live worker for stream cpu.img.post; no live worker for stream cpu.img.pre; "
        "no live worker for stream model.m1; no live notifier worker"
    )


async def test_readyz_is_200_when_every_stream_and_the_notifier_are_served(
    api: httpx.AsyncClient, sync_redis: fakeredis.FakeRedis, settings: Settings
) -> None:
    all_workers(sync_redis, settings)
    response = await api.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ready", "reason": None, "workers": 3}


async def test_readyz_names_the_one_missing_model_stream(
    api: httpx.AsyncClient, sync_redis: fakeredis.FakeRedis, settings: Settings
) -> None:
    beat(sync_redis, settings, "pre-1", "preprocess", CPU)
    beat(sync_redis, settings, "notifier-1", "notifier", ["dlpipe:events"])
    beat(sync_redis, settings, "model-2", "model", ["model.other"])
    response = await api.get("/readyz")
    assert response.status_code == 503
    assert response.json()["reason"] == "no live worker for stream model.m1"


async def test_readyz_names_each_priority_stream_no_worker_serves(
    api: httpx.AsyncClient, sync_redis: fakeredis.FakeRedis, settings: Settings
) -> None:
    beat(sync_redis, settings, "pre-1", "preprocess", CPU)
    beat(sync_redis, settings, "notifier-1", "notifier", ["dlpipe:events"])
    beat(sync_redis, settings, "model-old", "model", ["model.m1"])  # a worker that knows no priorities
    response = await api.get("/readyz")
    assert response.status_code == 503
    assert response.json()["reason"] == (
        "no live worker for stream model.m1:high; no live worker for stream model.m1:low"
    )


async def test_readyz_needs_a_notifier(
    api: httpx.AsyncClient, sync_redis: fakeredis.FakeRedis, settings: Settings
) -> None:
    beat(sync_redis, settings, "pre-1", "preprocess", CPU)
    beat(sync_redis, settings, "model-1", "model", MODEL)
    response = await api.get("/readyz")
    assert response.status_code == 503 and response.json()["reason"] == "no live notifier worker"


async def test_readyz_ignores_stale_heartbeats(
    api: httpx.AsyncClient, sync_redis: fakeredis.FakeRedis, settings: Settings
) -> None:
    all_workers(sync_redis, settings)
    beat(sync_redis, settings, "model-1", "model", MODEL, age_ms=settings.worker_ttl_ms + 1000)
    response = await api.get("/readyz")
    assert response.status_code == 503
    assert response.json()["reason"] == "no live worker for stream model.m1"
    assert response.json()["workers"] == 2


async def test_readyz_ignores_a_worker_whose_hash_is_gone(
    api: httpx.AsyncClient, sync_redis: fakeredis.FakeRedis, settings: Settings
) -> None:
    all_workers(sync_redis, settings)
    sync_redis.delete("dlpipe:worker:notifier-1")  # expired: the process is gone
    response = await api.get("/readyz")
    assert response.status_code == 503 and response.json()["reason"] == "no live notifier worker"


async def test_readyz_is_503_when_redis_is_unreachable(settings: Settings) -> None:
    port = free_port()
    app = create_app(settings, redis_factory=lambda url: Redis.from_url(f"redis://127.0.0.1:{port}/0"))
    async with running(app) as client:
        response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["reason"].startswith("redis unreachable: ")
