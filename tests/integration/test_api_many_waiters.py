"""Many requests waiting at once on one real API process (real Redis, no workers): a thousand long
polls on one job all get its end when it ends, none a 503, and their wake-up costs a handful of
Redis reads, not a thousand; two hundred `Prefer: wait` submits at once are all answered, none 503."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from services.api.input_models import EXAMPLE_IMAGE_BASE64
from tests.support.apiproc import ApiProcess, api_process
from tests.support.rawhttp import request
from tests.support.waiting import wait_until

URL = "/v1/pipelines/image-classify/jobs"
BODY = json.dumps({"inputs": [{"image_base64": EXAMPLE_IMAGE_BASE64}]}).encode()
JSON = {"Content-Type": "application/json"}
POLLS = 1000
SUBMITS = 200


@pytest.fixture
def api(tmp_path: Path, redis_url: str) -> Iterator[ApiProcess]:
    with api_process(tmp_path, redis_url, max_wait_s="120") as running:
        yield running


def transactions(client: redis.Redis) -> int:
    """MULTI/EXEC blocks Redis has run (each job read is one)."""
    return int(client.info("commandstats").get("cmdstat_exec", {}).get("calls", 0))


def waiting(api: ApiProcess) -> int:
    found = re.search(r"^dlpipe_api_waiting_requests (\S+)$", httpx.get(f"{api.url}/metrics").text, re.M)
    return int(float(found.group(1))) if found else -1


def test_a_thousand_long_polls_on_one_job_all_get_its_end(api: ApiProcess, redis_client: redis.Redis) -> None:
    async def run() -> tuple[list[int], set[str], int, float]:
        job_id = (await request(api.port, "POST", URL, headers=JSON, body=BODY)).json()["id"]
        polls = [
            asyncio.ensure_future(request(api.port, "GET", f"/v1/jobs/{job_id}?wait_s=100"))
            for _ in range(POLLS)
        ]
        await asyncio.to_thread(wait_until, lambda: waiting(api) == POLLS, 60, f"{POLLS} polls to wait")
        assert not any(p.done() for p in polls), "a long poll answered before its job ended"
        reads_before = transactions(redis_client)
        started = time.monotonic()
        canceled = await request(api.port, "POST", f"/v1/jobs/{job_id}/cancel")
        assert canceled.status == 200, canceled.body
        answers = await asyncio.gather(*polls)
        took_s = time.monotonic() - started
        statuses = {a.json()["status"] for a in answers if a.status == 200}
        return [a.status for a in answers], statuses, transactions(redis_client) - reads_before, took_s

    codes, statuses, wake_reads, took_s = asyncio.run(run())
    print(f"\n{POLLS} long polls answered {took_s:.2f} s after the cancel with {wake_reads} job reads")
    assert codes.count(200) == POLLS, f"{codes.count(503)} of {POLLS} got 503: {api.log_text()[-2000:]}"
    assert statuses == {"canceled"}
    # The cancel's own transaction and read, then a shared read per wake-up (or recheck tick), not 1000.
    assert wake_reads < 50, f"{wake_reads} job reads to wake {POLLS} polls"


def test_two_hundred_waiting_submits_at_once_are_all_answered(api: ApiProcess) -> None:
    async def run() -> list[int]:
        wait = {**JSON, "Prefer": "wait=1"}
        answers = await asyncio.gather(
            *[request(api.port, "POST", URL, headers=wait, body=BODY) for _ in range(SUBMITS)]
        )
        return [a.status for a in answers]

    codes = asyncio.run(run())
    assert codes.count(202) == SUBMITS, f"{codes.count(503)} of {SUBMITS} got 503: {api.log_text()[-2000:]}"
