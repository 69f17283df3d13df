"""Deadlines and the backlog counter on a real redis-server.

- The real API process (`dlpipe api`) with no worker at all: a job with `timeout_s` still
  ends by its deadline (the API's sweep), the pipeline admits jobs again, and a 429 meanwhile
  says `Retry-After: 60` (nothing drains);
- a stage stuck half-way: the sweep ends the job, then the real workers skip what is left;
- a job whose TTL passes while its items are queued ends as expired, and one whose record
  vanished anyway has its items recounted out of the backlog: the counter never stays up.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from redis.asyncio import Redis as AsyncRedis

from services.api import sweep as sweep_module
from services.api.drain import MAX_S, DrainRates
from services.api.sweep import Sweeper
from shared import keys
from shared.job_record import JobRecord
from shared.jobs import TTL_EXPIRED_REASON, queue_new_job
from shared.messages import now_ms
from tests.stagefns import job_view
from tests.support.api import backlog, write_pipelines
from tests.support.apiproc import api_process as start_api
from tests.support.stack import Stack
from tests.support.waiting import wait_until

SWEEP_MS = 100


def completed_events(client: redis.Redis, job_id: str) -> int:
    events = [f for _, f in client.xrange(keys.EVENTS) if f[b"job"] == job_id.encode()]
    return sum(1 for f in events if f[b"type"] == b"job.completed")


@pytest.fixture
def api_process(tmp_path: Path, redis_url: str) -> Iterator[str]:
    """`dlpipe api` on a free port, on the test's Redis, with no worker anywhere; its base URL."""
    with start_api(
        tmp_path,
        redis_url,
        max_backlog="3",
        pipelines_file=str(write_pipelines(tmp_path)),
        deadline_sweep_interval_ms=str(SWEEP_MS),
    ) as api:
        yield api.url


def test_with_no_worker_a_job_still_ends_by_its_deadline(api_process: str, redis_client: redis.Redis) -> None:
    image = {"image_base64": base64.b64encode(b"\xff\xd8x").decode()}
    with httpx.Client(base_url=api_process, timeout=10) as http:
        timed = http.post("/v1/pipelines/img/jobs", json={"inputs": [image, image], "timeout_s": 4})
        assert timed.status_code == 202, timed.text
        plain = http.post("/v1/pipelines/img/jobs", json={"inputs": [image]})
        assert plain.status_code == 202
        deadline_s = time.time() + 4  # at least this late: the job was created before now
        # At the cap (3 items) and nothing drains (no worker): retry in the longest wait, 60 s
        # (once the API has watched the drain for 2 s; 5 s before that).
        refused = wait_until(
            lambda: (
                (r := http.post("/v1/pipelines/img/jobs", json={"inputs": [image]})).status_code == 429
                and r.headers["retry-after"] == str(MAX_S)
                and r
            ),
            5,
            "a 429 whose Retry-After knows nothing drains",
        )
        assert refused.json()["detail"].endswith(f"retry after {MAX_S} s")
        job_id = timed.json()["id"]
        view = wait_until(
            lambda: (v := http.get(f"/v1/jobs/{job_id}").json())["status"] != "queued" and v,
            10,
            "the job to end",
        )
        ended_s = time.time()
        # Ended by its deadline plus about one sweep interval (and this machine's scheduling).
        assert ended_s - deadline_s < SWEEP_MS / 1000 + 1.0, ended_s - deadline_s
        assert view["status"] == "failed" and view["error"] == "all 2 items failed"
        assert {o["error"] for o in view["outputs"]} == {"expired: the job's timeout_s of 4 s passed"}
        assert completed_events(redis_client, job_id) == 1
        assert not redis_client.exists(keys.item(job_id, 0), keys.item(job_id, 1))  # inputs freed
        assert backlog(redis_client, "img") == 1  # the other job's item only
        assert [m.decode() for m in redis_client.zrange(keys.deadlines("img"), 0, -1)] == [plain.json()["id"]]
        # Room again: admitted.
        assert http.post("/v1/pipelines/img/jobs", json={"inputs": [image]}).status_code == 202
        assert http.get(f"/v1/jobs/{plain.json()['id']}").json()["status"] == "queued"  # no deadline yet


@pytest.mark.anyio
async def test_a_stuck_stage_cannot_keep_a_job_open_and_the_workers_skip_what_is_left(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack.queue("s1", 20, timeout_s=30)
    stack.half_way()  # 0-7 done; 8-15 wait for the model, 16-19 for prep: say the model is stuck
    before = dict(stack.calls)
    real_now = sweep_module.now_ms
    monkeypatch.setattr(sweep_module, "now_ms", lambda: real_now() + 31_000)  # 31 s later
    client = AsyncRedis.from_url(stack.settings.redis_url)
    try:
        sweeper = Sweeper(client, ["sums"], ttl_s=600, interval_s=0.1, rates=DrainRates())
        assert await sweeper.sweep_once() == 1
    finally:
        await client.aclose()
    view = job_view(stack.client, "s1")
    assert view.status.value == "succeeded" and view.progress.done == 20
    assert [o.status.value for o in view.outputs] == ["succeeded"] * 8 + ["failed"] * 12
    assert view.outputs[3].result == {"sum": 6.0, "batch": 8}  # finished results stay
    assert stack.completed_events("s1") == 1 and backlog(stack.client, "sums") == 0
    stack.drain()  # the model comes back: nothing of the ended job runs
    assert dict(stack.calls) == before
    assert stack.nothing_pending() and stack.completed_events("s1") == 1
    assert backlog(stack.client, "sums") == 0


def write_job(client: redis.Redis, stack: Stack, job_id: str, n: int, ttl_s: int) -> int:
    """A job written with a short TTL (the API's is at least 60 s); returns when it was created."""
    created = now_ms()
    pipe = client.pipeline()
    queue_new_job(
        pipe,
        JobRecord.new(
            id=job_id, pipeline=stack.store.config.pipelines["sums"].name, total=n, created_ms=created
        ),
        pipeline=stack.store.config.pipelines["sums"],
        inputs=[{"v": i} for i in range(n)],
        ttl_s=ttl_s,
    )
    pipe.execute()
    return created


@pytest.mark.anyio
async def test_the_backlog_counter_never_stays_up_for_jobs_past_their_ttl_or_gone(stack: Stack) -> None:
    client = stack.client
    stack.queue("keeps", 2)  # an ordinary job, open all along: its 2 items must stay counted
    created = write_job(client, stack, "old", 3, ttl_s=1)  # its TTL passes while its items wait
    write_job(client, stack, "lost", 4, ttl_s=1)
    client.pexpire(keys.job("lost"), 1)  # its record vanishes anyway (an eviction, a manual DEL)
    wait_until(lambda: not client.exists(keys.job("lost")), 5, "the record to expire")
    assert backlog(client, "sums") == 2 + 3 + 4
    wait_until(lambda: now_ms() > created + 1000, 5, "the old job's TTL to pass")
    sweeper = Sweeper(
        AsyncRedis.from_url(stack.settings.redis_url), ["sums"], ttl_s=600, interval_s=0.1, rates=DrainRates()
    )
    try:
        assert await sweeper.sweep_once() == 1
    finally:
        await sweeper.client.aclose()
    view = job_view(client, "old")
    assert view.status.value == "failed" and {o.error for o in view.outputs} == {TTL_EXPIRED_REASON}
    assert stack.completed_events("old") == 1
    assert backlog(client, "sums") == 2  # exactly what is open: `keeps`
    stack.drain()  # the workers get to every entry: the ended and vanished jobs' are acknowledged
    assert stack.nothing_pending()
    assert job_view(client, "keeps").status.value == "succeeded" and backlog(client, "sums") == 0
    assert client.zcard(keys.deadlines("sums")) == 0
