"""DLPIPE_REDIS_MIN_REPLICAS on real redis-servers: a primary with no replica cannot confirm a
write (WAIT times out), so a submit answers 503 with Retry-After, never a 202 a failover could
take back, and what becomes of its job is defined: without an Idempotency-Key it is canceled;
with one it stays, and the key's retry answers 202 for that same job once a replica has it.
A cancel is confirmed the same way; /readyz says the primary lacks replicas."""

from __future__ import annotations

import base64
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import redis

from services.api.app import create_app
from shared import keys
from shared.embedded_redis import start_redis
from shared.settings import Settings
from tests.support.api import running, write_pipelines
from tests.support.waiting import wait_until

pytestmark = pytest.mark.anyio

BODY = {"inputs": [{"image_base64": base64.b64encode(b"\x01" * 9).decode()}]}


@pytest.fixture
def primary(tmp_path: Path) -> Iterator[int]:
    proc, port = start_redis(tmp_path / "primary")
    yield port
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)


@pytest.fixture
def client(primary: int) -> Iterator[redis.Redis]:
    c = redis.Redis(port=primary, decode_responses=True)
    yield c
    c.close()


@pytest.fixture
async def api(tmp_path: Path, primary: int) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        redis_url=f"redis://127.0.0.1:{primary}/0",
        pipelines_file=write_pipelines(tmp_path),
        redis_min_replicas=1,
        redis_wait_timeout_ms=50,
    )
    async with running(create_app(settings)) as http:
        yield http


def attach_replica(tmp_path: Path, primary: int, client: redis.Redis) -> tuple[object, int]:
    proc, port = start_redis(tmp_path / "replica")
    redis.Redis(port=port).replicaof("127.0.0.1", primary)
    replica = redis.Redis(port=port)

    def in_sync() -> bool:  # attached, its full sync done, and acknowledging writes
        client.set("probe", 1)
        return replica.info("replication").get("master_link_status") == "up" and client.wait(1, 100) >= 1

    wait_until(in_sync, 20, "the replica to attach and sync")
    client.delete("probe")
    return proc, port


def job_ids(client: redis.Redis) -> list[str]:
    """The ids of the job records in Redis (not the keys beside them: events, inputs, files)."""
    prefix = keys.job("")
    return [k.removeprefix(prefix) for k in client.keys(keys.job("*")) if ":" not in k.removeprefix(prefix)]


async def test_without_a_key_the_unconfirmed_job_is_canceled(
    api: httpx.AsyncClient, client: redis.Redis
) -> None:
    response = await api.post("/v1/pipelines/img/jobs", json=BODY)
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1"
    detail = response.json()["detail"]
    assert "not confirmed on DLPIPE_REDIS_MIN_REPLICAS=1" in detail and "canceled" in detail, detail
    (job_id,) = job_ids(client)
    assert job_id in detail
    assert client.hget(keys.job(job_id), "status") == "canceled"  # ended: no worker runs it
    assert int(client.get(keys.backlog("img")) or 0) == 0  # its place in the backlog given back


async def test_with_a_key_the_job_stays_and_its_retry_answers_202_once_a_replica_has_it(
    api: httpx.AsyncClient, client: redis.Redis, tmp_path: Path, primary: int
) -> None:
    headers = {"Idempotency-Key": "wait-test-key-0123456789abcdef"}
    first = await api.post("/v1/pipelines/img/jobs", json=BODY, headers=headers)
    assert first.status_code == 503, first.text
    assert "same Idempotency-Key" in first.json()["detail"]
    (job_id,) = job_ids(client)
    assert client.hget(keys.job(job_id), "status") == "queued"  # kept: it runs
    again = await api.post("/v1/pipelines/img/jobs", json=BODY, headers=headers)
    assert again.status_code == 503, again.text  # still no replica: no replayed 202 either

    proc, _ = attach_replica(tmp_path, primary, client)
    try:
        replayed = await api.post("/v1/pipelines/img/jobs", json=BODY, headers=headers)
        assert replayed.status_code == 202, replayed.text
        assert replayed.json()["id"] == job_id and replayed.headers["idempotent-replayed"] == "true"
        fresh = await api.post("/v1/pipelines/img/jobs", json=BODY)
        assert fresh.status_code == 202, fresh.text  # confirmed at once now
        assert len(job_ids(client)) == 2
    finally:
        proc.send_signal(signal.SIGKILL)  # type: ignore[attr-defined]
        proc.wait(10)  # type: ignore[attr-defined]


async def test_a_cancel_is_confirmed_too(
    api: httpx.AsyncClient, client: redis.Redis, tmp_path: Path, primary: int
) -> None:
    proc, _ = attach_replica(tmp_path, primary, client)
    job_id = (await api.post("/v1/pipelines/img/jobs", json=BODY)).json()["id"]
    proc.send_signal(signal.SIGKILL)  # type: ignore[attr-defined]
    proc.wait(10)  # type: ignore[attr-defined]
    wait_until(lambda: client.info("replication")["connected_slaves"] == 0, 20, "the replica to be gone")
    canceled = await api.post(f"/v1/jobs/{job_id}/cancel")
    assert canceled.status_code == 503, canceled.text
    assert client.hget(keys.job(job_id), "status") == "canceled"  # on the primary, unconfirmed
    assert (await api.post(f"/v1/jobs/{job_id}/cancel")).status_code == 409


async def test_readyz_says_the_primary_lacks_replicas(api: httpx.AsyncClient) -> None:
    response = await api.get("/readyz")
    assert response.status_code == 503
    assert "the primary has 0 replicas, DLPIPE_REDIS_MIN_REPLICAS=1" in response.json()["reason"]
