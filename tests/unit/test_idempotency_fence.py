"""An `Idempotency-Key` claim that lapsed (its request slow, or its API process killed) and was
taken over by a retry can never make a second job: the job's transaction runs only while the
key still holds the claim (Claim.fence), against fakeredis."""

from __future__ import annotations

import time
from typing import Any

import fakeredis
import httpx
import pytest
from redis.exceptions import WatchError
from starlette.exceptions import HTTPException

from services.api import admission, job_writer
from shared import keys
from tests.support.api import b64

pytestmark = pytest.mark.anyio

BODY = {"inputs": [{"image_base64": b64(b"\xff\xd8image")}]}


def job_count(client: fakeredis.FakeRedis) -> int:
    return sum(1 for key in client.scan_iter("dlpipe:job:*") if key.count(b":") == 2)


async def test_a_claim_taken_over_by_a_retry_cannot_start_its_transaction(
    fake_server: fakeredis.FakeServer, sync_redis: fakeredis.FakeRedis
) -> None:
    client = fakeredis.FakeAsyncRedis(server=fake_server)
    first = await admission.claim(client, "anon", "key-1", "f1", "job-1")
    assert isinstance(first, admission.Claim)
    sync_redis.delete(first.redis_key)  # the claim lapsed (PENDING_S) ...
    retry = await admission.claim(client, "anon", "key-1", "f1", "job-2", wait_s=0)
    assert isinstance(retry, admission.Claim)  # ... and the retry holds the key now
    async with client.pipeline(transaction=True) as pipe:
        with pytest.raises(HTTPException, match="took it over") as refused:
            await first.fence(pipe)
    assert refused.value.status_code == 409
    async with client.pipeline(transaction=True) as pipe:  # the retry's own claim passes
        await retry.fence(pipe)
        pipe.set("dlpipe:test:written", 1)
        await pipe.execute()
    assert sync_redis.get("dlpipe:test:written") == b"1"
    await client.aclose()


async def test_a_takeover_between_fence_and_write_fails_the_request_and_writes_nothing(
    api: httpx.AsyncClient, sync_redis: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_queue = job_writer.queue_new_job

    def queue_after_a_takeover(pipe: Any, *args: Any, **kwargs: Any) -> None:
        # The claim lapses and a retry takes the key over while this request builds its MULTI.
        (key,) = sync_redis.scan_iter("dlpipe:idem:*")
        sync_redis.set(key, '{"fingerprint": "x", "job": "other", "state": "pending"}')
        real_queue(pipe, *args, **kwargs)

    monkeypatch.setattr(job_writer, "queue_new_job", queue_after_a_takeover)
    response = await api.post("/v1/pipelines/img/jobs", json=BODY, headers={"Idempotency-Key": "slow-1"})
    assert response.status_code == 409, response.text
    assert "took it over" in response.json()["detail"]
    assert job_count(sync_redis) == 0 and not sync_redis.exists(keys.stream("cpu.img.pre"))
    assert int(sync_redis.get(keys.backlog("img")) or 0) == 0
    assert sync_redis.zcard(keys.admissions("img")) == 0  # its grant was given back
    monkeypatch.setattr(job_writer, "queue_new_job", real_queue)
    # Another request without the race goes through.
    assert (await api.post("/v1/pipelines/img/jobs", json=BODY)).status_code == 202


async def test_a_connection_lost_while_watching_is_a_503_and_the_retry_goes_through_at_once(
    api: httpx.AsyncClient,
    sync_redis: fakeredis.FakeRedis,
    fake_server: fakeredis.FakeServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_fence = admission.Claim.fence

    async def fence_as_redis_dies(self: admission.Claim, pipe: Any) -> None:
        # As redis-py does when the connection drops under a WATCH: Redis is gone, WatchError.
        fake_server.connected = False
        raise WatchError("A ConnectionError occurred while watching one or more keys")

    monkeypatch.setattr(admission.Claim, "fence", fence_as_redis_dies)
    key = {"Idempotency-Key": "redis-died-1"}
    response = await api.post("/v1/pipelines/img/jobs", json=BODY, headers=key)
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1" and "retry" in response.json()["detail"]
    monkeypatch.setattr(admission.Claim, "fence", real_fence)
    fake_server.connected = True  # Redis is back: the claim is given back in the background ...
    started = time.monotonic()
    retry = await api.post("/v1/pipelines/img/jobs", json=BODY, headers=key)
    assert retry.status_code == 202, retry.text
    # ... so the retry is not held for the claim's whole lapse (PENDING_S).
    assert time.monotonic() - started < admission.PENDING_S / 2
    assert job_count(sync_redis) == 1


async def test_a_write_whose_answer_was_lost_is_a_202(
    api: httpx.AsyncClient, sync_redis: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_pipeline = fakeredis.FakeAsyncRedis.pipeline

    def pipeline(self: Any, *args: Any, **kwargs: Any) -> Any:
        pipe = real_pipeline(self, *args, **kwargs)
        execute = pipe.execute

        async def execute_then_lose_the_answer(*a: Any, **k: Any) -> Any:
            if not pipe.explicit_transaction:
                return await execute(*a, **k)
            await execute(*a, **k)  # EXEC ran ...
            raise WatchError(
                "A ConnectionError occurred while watching one or more keys"
            )  # ... its reply lost

        pipe.execute = execute_then_lose_the_answer
        return pipe

    monkeypatch.setattr(fakeredis.FakeAsyncRedis, "pipeline", pipeline)
    response = await api.post(
        "/v1/pipelines/img/jobs", json=BODY, headers={"Idempotency-Key": "lost-answer-1"}
    )
    assert response.status_code == 202, response.text
    assert job_count(sync_redis) == 1 and sync_redis.exists(keys.job(response.json()["id"]))
