"""The byte budget (DLPIPE_MAX_BACKLOG_BYTES) and a Redis at its maxmemory, on real redis-servers:
the API in-process (httpx ASGITransport), items finished by the real Store, the real sweep.

- admission by bytes: 429 with Retry-After once the jobs not ended hold the budget, the bytes
  counted being the inputs as they sit in Redis; concurrent submits overshoot by one job at most;
- the bytes come back exactly, however a job ends: finished, canceled, expired by the sweep, or
  recounted when a job's record vanished;
- a Redis at maxmemory (noeviction): a submit it refuses gets 503 with Retry-After, leaves
  nothing behind, and the API goes on serving (reads, cancels, then submits once memory is free),
  and a refused transaction costs the API no time per byte of input;
- the embedded Redis runs with its maxmemory and noeviction.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from redis.asyncio import Redis as AsyncRedis
from redis.exceptions import OutOfMemoryError

from services.api.app import create_app
from services.api.drain import DEFAULT_S, DrainRates
from services.api.redis_memory import transaction
from services.api.sweep import Sweeper
from services.embedded import REDIS_GRACE_S, start_embedded_redis
from shared import keys
from shared.embedded_redis import find_redis_server, start_redis
from shared.messages import now_ms
from shared.redis_full import is_out_of_memory
from tests.support.api import api_settings, b64, job_count, running
from tests.support.stack import Stack
from tests.support.stages_by_hand import finish_everything
from tests.support.waiting import wait_until
from workers.heartbeat import Heartbeat

pytestmark = pytest.mark.anyio

URL = "/v1/pipelines/img/jobs"
PAYLOAD = 1000  # bytes per input


def image(tag: str, size: int = PAYLOAD) -> dict[str, str]:
    """One image input of exactly `size` bytes (its tag first, so that each is another request)."""
    return {"image_base64": b64(tag.encode().ljust(size, b"x"))}


def body(*tags: str, size: int = PAYLOAD) -> dict[str, Any]:
    return {"inputs": [image(tag, size) for tag in tags]}


def held(client: redis.Redis) -> int:
    return int(client.hget(keys.BYTES, "held") or 0)


def freed(client: redis.Redis) -> int:
    return int(client.hget(keys.BYTES, "freed") or 0)


def job_bytes(client: redis.Redis, job_id: str) -> int:
    """The job's bytes as counted, checked against its inputs as they sit in Redis."""
    counted = int(client.hget(keys.job(job_id), "bytes"))
    total = int(client.hget(keys.job(job_id), "total"))
    stored = sum(client.hstrlen(keys.item(job_id, i), keys.INPUT_FIELD) for i in range(total))
    assert counted == stored > 0
    return counted


def no_grants_left(client: redis.Redis) -> bool:
    return client.zcard(keys.admissions("img")) == 0 and client.zcard(keys.BYTE_GRANTS) == 0


async def submit(api: httpx.AsyncClient, payload: dict[str, Any], **headers: str) -> httpx.Response:
    return await api.post(URL, json=payload, headers=headers)


async def probe_job_bytes(
    tmp_path: Path, redis_url: str, client: redis.Redis, payload: dict[str, Any]
) -> int:
    """What a job with this body holds (an API with the default budget writes it, then it ends)."""
    async with running(create_app(api_settings(tmp_path, redis_url))) as api:
        response = await submit(api, payload)
        assert response.status_code == 202, response.text
        counted = job_bytes(client, response.json()["id"])
    finish_everything(client, tmp_path / "pipelines.yaml")
    assert held(client) == 0
    return counted


# -- admission by bytes -----------------------------------------------------------------------


async def test_over_the_byte_budget_new_jobs_get_429_until_jobs_end(
    tmp_path: Path, redis_url: str, redis_client: redis.Redis
) -> None:
    settings = api_settings(tmp_path, redis_url, max_backlog_bytes=PAYLOAD * 5 // 2)
    async with running(create_app(settings)) as api:
        ids = []
        for n in range(3):  # held 0, then ~1000 and ~2000: under 2500, admitted (the third takes it over)
            response = await submit(api, body(f"a{n}-"))
            assert response.status_code == 202, response.text
            ids.append(response.json()["id"])
        one = job_bytes(redis_client, ids[0])
        assert PAYLOAD < one < PAYLOAD + 100  # the input as stored: its bytes and a small header
        assert [job_bytes(redis_client, i) for i in ids] == [one] * 3 and held(redis_client) == 3 * one
        refused = await submit(api, body("a3-"))
        assert refused.status_code == 429, refused.text
        assert refused.headers["retry-after"] == str(DEFAULT_S)  # no drain measured yet
        assert refused.json()["detail"] == (
            f"at capacity: the jobs not finished hold {3 * one} bytes ({3 * one / 1024:.1f} KiB) of "
            "inputs in Redis, "
            "at most 2500 bytes (2.4 KiB) (DLPIPE_MAX_BACKLOG_BYTES, all pipelines together); "
            f"retry after {DEFAULT_S} s"
        )
        assert job_count(redis_client) == 3 and held(redis_client) == 3 * one  # nothing written
        assert no_grants_left(redis_client)
        # The jobs end: their bytes come back, and jobs are admitted again.
        assert finish_everything(redis_client, tmp_path / "pipelines.yaml") == 3
        assert held(redis_client) == 0 and freed(redis_client) == 3 * one
        again = await submit(api, body("a3-"))
        assert again.status_code == 202, again.text
        assert held(redis_client) == one


async def test_concurrent_submits_overshoot_the_byte_budget_by_one_job_at_most(
    tmp_path: Path, redis_url: str, redis_client: redis.Redis
) -> None:
    one = await probe_job_bytes(tmp_path, redis_url, redis_client, body("c00-"))
    budget = 4 * one + 1  # four jobs leave room for a fifth, which takes the budget over
    settings = api_settings(tmp_path, redis_url, max_backlog_bytes=budget)
    async with running(create_app(settings)) as api:
        answers = await asyncio.gather(*(submit(api, body(f"c{n:02d}-")) for n in range(20)))
    assert Counter(r.status_code for r in answers) == {202: 5, 429: 15}
    assert job_count(redis_client) == 1 + 5 and held(redis_client) == 5 * one  # the probe's, ended, and 5
    assert held(redis_client) - budget < one  # over the budget by less than one job
    assert no_grants_left(redis_client)


async def test_the_bytes_come_back_exactly_however_jobs_end(
    tmp_path: Path, redis_url: str, redis_client: redis.Redis
) -> None:
    # The app's own sweep runs once at start; this test sweeps by hand, when it wants.
    settings = api_settings(tmp_path, redis_url, deadline_sweep_interval_ms=3_600_000)
    async with running(create_app(settings)) as api:
        jobs = {}
        for name, payload in {
            "finished": body("f0-", "f1-", "f2-", size=700),
            "canceled": body("k0-", "k1-", size=1500),
            "expiring": {**body("e0-", size=2000), "timeout_s": 0.05},
            "vanishing": {**body("v0-", size=3000), "timeout_s": 0.05},
        }.items():
            response = await submit(api, payload)
            assert response.status_code == 202, response.text
            jobs[name] = response.json()
        sizes = {name: job_bytes(redis_client, job["id"]) for name, job in jobs.items()}
        assert len(set(sizes.values())) == 4 and held(redis_client) == sum(sizes.values())

        # Canceled: its bytes come back in the cancel's own step.
        assert (await api.post(f"/v1/jobs/{jobs['canceled']['id']}/cancel")).status_code == 200
        assert held(redis_client) == sum(sizes.values()) - sizes["canceled"]
        assert freed(redis_client) == sizes["canceled"]

        # Expired by the deadline sweep; and a job whose record vanished is recounted away.
        redis_client.delete(keys.job(jobs["vanishing"]["id"]))
        deadline = max(int(redis_client.hget(keys.job(jobs["expiring"]["id"]), "deadline")), now_ms())
        wait_until(lambda: now_ms() > deadline, 10, "the jobs' deadline to pass")
        client = AsyncRedis.from_url(redis_url)
        try:
            sweeper = Sweeper(client, ["img"], ttl_s=600, interval_s=1.0, rates=DrainRates())
            assert await sweeper.sweep_once() == 1
        finally:
            await client.aclose()
        assert (await api.get(f"/v1/jobs/{jobs['expiring']['id']}")).json()["status"] == "failed"
        assert held(redis_client) == sizes["finished"]
        assert freed(redis_client) == sizes["canceled"] + sizes["expiring"]

        # Finished by the workers: back to exactly 0.
        assert finish_everything(redis_client, tmp_path / "pipelines.yaml") == 3
        assert held(redis_client) == 0
        assert freed(redis_client) == sizes["canceled"] + sizes["expiring"] + sizes["finished"]
        assert int(redis_client.get(keys.backlog("img")) or 0) == 0 and no_grants_left(redis_client)


# -- a Redis at maxmemory ---------------------------------------------------------------------

MAXMEMORY = "4mb"


@pytest.fixture(params=["bundled", "system"])
def small_redis(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A redis-server of ours with a 4 MB maxmemory, noeviction: the bundled one (6.2), and the
    machine's own (7.x) where there is one."""
    binary = find_redis_server() if request.param == "bundled" else shutil.which("redis-server")
    if binary is None:
        pytest.skip("no redis-server on PATH (the bundled one is tested)")
    proc, port = start_redis(tmp_path / "small-redis", maxmemory=MAXMEMORY, binary=binary)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_over_its_maxmemory_redis_still_lets_the_workers_finish_what_it_holds(
    tmp_path: Path, small_redis: str
) -> None:
    stack = Stack(small_redis, tmp_path)  # consumer groups made while there is room
    stack.queue("j1", 8)
    client = redis.Redis.from_url(small_redis)
    client.setrange("dlpipe:test:ballast", 5 * 1024 * 1024, "x")  # Redis is over its 4 MB now
    with pytest.raises(redis.ResponseError) as refused:
        client.set("dlpipe:test:new-work", "x")
    assert is_out_of_memory(refused.value)
    # The workers start the job, run every stage, count, beat and recover all the same.
    beat = Heartbeat(client, "cpu-1", "preprocess", ["cpu.sums.prep"], interval_ms=1000, ttl_ms=10_000)
    assert beat.beat()
    stack.cpu.recover()
    stack.model.recover()
    for _ in range(10):
        if stack.cpu.run_once() + stack.model.run_once() == 0:
            break
    assert client.hget(keys.job("j1"), "status") == b"succeeded"
    assert int(client.hget(keys.job("j1"), "done")) == 8
    assert client.zscore(keys.WORKERS, "cpu-1") is not None


async def test_a_submit_redis_has_no_memory_for_gets_503_leaves_nothing_and_the_api_goes_on(
    tmp_path: Path, small_redis: str
) -> None:
    client = redis.Redis.from_url(small_redis)
    assert client.config_get("maxmemory") == {"maxmemory": str(4 * 1024 * 1024)}
    assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
    async with running(create_app(api_settings(tmp_path, small_redis))) as api:
        accepted: list[str] = []
        for n in range(20):  # 512 KiB jobs, each with its Idempotency-Key, until Redis is full
            refused = await submit(api, body(f"m{n:02d}-", size=512 * 1024), **{"Idempotency-Key": f"k{n}"})
            if refused.status_code != 202:
                break
            accepted.append(refused.json()["id"])
        assert accepted and refused.status_code == 503, refused.text
        assert refused.headers["retry-after"] == "5"
        detail = refused.json()["detail"]
        assert "maxmemory" in detail and "nothing of it was stored" in detail
        # The client reads its other jobs at once (Redis may still be over its maxmemory now: the
        # refused request's buffer is freed a moment later).
        assert (await api.get(f"/v1/jobs/{accepted[0]}")).status_code == 200
        # Nothing of it: no job, item or stream entry, its grant and its key given back.
        assert job_count(client) == len(accepted) == client.xlen(keys.stream("cpu.img.pre"))
        assert len(list(client.scan_iter("dlpipe:item:*"))) == len(accepted)
        assert len(list(client.scan_iter("dlpipe:idem:*"))) == len(accepted)
        assert int(client.get(keys.backlog("img"))) == len(accepted)
        assert held(client) == sum(job_bytes(client, job_id) for job_id in accepted)
        assert no_grants_left(client)
        # Redis past its maxmemory (a write of small arguments that makes a 4 MB string is let
        # through while under it): every write that may add memory is refused now, and any MULTI.
        wait_until(lambda: client.setrange("dlpipe:test:ballast", 4 * 1024 * 1024, "x"), 10, "the ballast")
        assert client.info("memory")["used_memory"] > 4 * 1024 * 1024
        again = await submit(api, body("full-"), **{"Idempotency-Key": "full"})
        assert again.status_code == 503 and again.headers["retry-after"] == "5", again.text
        assert job_count(client) == len(accepted) and no_grants_left(client)
        assert len(list(client.scan_iter("dlpipe:idem:*"))) == len(accepted)
        # Still serving: health, reads, and cancels, which free memory.
        assert (await api.get("/healthz")).status_code == 200
        for job_id in accepted:
            assert (await api.get(f"/v1/jobs/{job_id}")).json()["status"] == "queued"
            canceled = await api.post(f"/v1/jobs/{job_id}/cancel")
            assert canceled.status_code == 200 and canceled.json()["status"] == "canceled", canceled.text
        assert held(client) == 0 and int(client.get(keys.backlog("img"))) == 0
        assert not list(client.scan_iter("dlpipe:item:*"))  # the canceled jobs' inputs are freed
        client.delete("dlpipe:test:ballast")
        # Room again: the refused request, retried with its key, is written (a new job, once).
        n = len(accepted)
        retried = await submit(api, body(f"m{n:02d}-", size=512 * 1024), **{"Idempotency-Key": f"k{n}"})
        assert retried.status_code == 202, retried.text
        assert "idempotent-replayed" not in retried.headers
        assert job_count(client) == n + 1 and held(client) == job_bytes(client, retried.json()["id"])
    client.close()


async def test_a_refused_transaction_costs_the_api_no_time_per_byte(small_redis: str) -> None:
    """redis-py's own pipeline quotes a refused command through textwrap: seconds of the API's
    CPU (its event loop) per refused input of megabytes. The job's transaction reports it at once."""
    client = AsyncRedis.from_url(small_redis)
    try:
        started = time.process_time()
        with pytest.raises(OutOfMemoryError) as refused:
            async with transaction(client) as pipe:
                pipe.incr("dlpipe:test:n")
                upload = random.Random(7).randbytes(8 * 1024 * 1024)  # as an image is: no pattern
                pipe.hset("dlpipe:test:big", "in", upload)  # twice the maxmemory
                await pipe.execute()
        assert time.process_time() - started < 1.0  # redis-py's own pipeline: 3 to 4 s here
        assert "HSET dlpipe:test:big" in str(refused.value) and is_out_of_memory(refused.value)
        assert await client.get("dlpipe:test:n") is None  # the transaction was discarded whole
    finally:
        await client.aclose()


def test_the_embedded_redis_runs_with_its_maxmemory_and_noeviction(tmp_path: Path) -> None:
    (tmp_path / "embedded").mkdir()  # `dlpipe up` makes it as it locks it
    embedded = start_embedded_redis(tmp_path / "embedded", {}, "everysec", "3mb")
    client = redis.Redis.from_url(embedded.url)
    try:
        assert client.config_get("maxmemory") == {"maxmemory": str(3 * 1024 * 1024)}
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
    finally:
        client.close()
        embedded.sup.stop(REDIS_GRACE_S)
