"""The API process is SIGKILLed mid-run, twice, under `dlpipe up` (which starts it again)
while clients submit jobs and retry every failure with the same `Idempotency-Key`: each
logical request ends up as exactly one job, and every job ends, once (Jepsen-style, with
chaos.check). A request killed mid-way leaves the client unsure whether its job was written:
its retry with the same key answers that job (`Idempotent-Replayed: true`) if it was, and
writes it if it was not, so it is never made twice nor lost.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
import redis

from shared import keys
from tests.e2e.chaos import (
    PIPELINE,
    Submitted,
    check,
    finished,
    image_classify_only,
    processes,
    redis_url_of,
    submit_jobs,
    tiny_jpegs,
)
from tests.e2e.conftest import Stack, start_stack, stop_stack
from tests.e2e.receiver import Receiver
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

log = logging.getLogger("tests.api_restart")

JOBS = 200
KILL_AT = (50, 120)  # accepted jobs at each kill


def api_pid(stack: Stack) -> int | None:
    found = processes(stack.proc.pid, "api")
    return next(iter(found)) if len(found) == 1 else None


def healthy(stack: Stack) -> bool:
    try:
        return httpx.get(f"{stack.base_url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def jobs_per_request(client: redis.Redis) -> dict[int, list[str]]:
    """Every job record in Redis, by the submitter's job number (metadata.k)."""
    found: dict[int, list[str]] = {}
    for key in client.scan_iter(f"{keys.job('')}*", count=1000):
        if key.count(b":") != 2:  # dlpipe:job:<id> itself, not :outputs, :webhook, :blob:n
            continue
        job_id, metadata = client.hmget(key, ["id", "metadata"])
        k = int(json.loads(metadata)["k"])
        found.setdefault(k, []).append(job_id.decode())
    return found


def test_every_request_makes_one_job_while_the_api_is_killed(tmp_path: Path) -> None:
    env = {
        "DLPIPE_PIPELINES_FILE": str(image_classify_only(tmp_path / "pipelines.yaml")),
        "DLPIPE_TORCH_THREADS": "1",
        "DLPIPE_WEBHOOK_ALLOW_PRIVATE": "true",  # the receiver is on 127.0.0.1
    }
    with Receiver() as receiver:
        run_with_api_kills(tmp_path, env, receiver)


def run_with_api_kills(tmp_path: Path, env: dict[str, str], receiver: Receiver) -> None:
    stack = start_stack(tmp_path, env)
    client = redis.Redis.from_url(redis_url_of(stack.log()))
    stop = threading.Event()
    run = uuid.uuid4().hex[:8]
    try:
        submitted = Submitted()
        submitter = threading.Thread(
            target=submit_jobs,
            kwargs={
                "base_url": stack.base_url,
                "n": JOBS,
                "images": tiny_jpegs(),
                "webhook": receiver.url,
                "threads": 4,
                "into": submitted,
                "retry": lambda tries: not stop.wait(0.1),
                "headers": lambda k: {"Idempotency-Key": f"api-restart-{run}-{k}"},
            },
        )
        t0 = time.monotonic()
        submitter.start()
        recoveries = []
        for threshold in KILL_AT:
            wait_until(lambda: len(submitted.accepted) >= threshold, 120, f"{threshold} jobs accepted")
            pid = api_pid(stack)
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            killed = time.monotonic()
            wait_until(lambda: api_pid(stack) not in (None, pid) and healthy(stack), 60, "a new API")
            recoveries.append(time.monotonic() - killed)
        submitter.join(240)
        assert not submitter.is_alive(), "submitting took too long"
        submitted_s = time.monotonic() - t0
        job_ids = list(submitted.accepted)
        wait_until(lambda: finished(client, job_ids) == len(job_ids), 120, "every accepted job to finish")
        wait_until(lambda: receiver.answered_jobs() >= set(job_ids), 30, "every webhook")
        verdict = check(stack.base_url, client, job_ids, receiver.hooks, submitted.uncertain)
        made = jobs_per_request(client)
        summary = (
            f"api restart: {verdict.summary()}; {len(KILL_AT)} API kills, a new API answering after "
            + ", ".join(f"{r:.1f}s" for r in recoveries)
            + f"; submissions not answered 202 (retried): {dict(submitted.refused)}; requests left "
            f"unsure by a failure: {len(submitted.uncertain)}, of which answered by a replay: "
            f"{len(submitted.replayed & submitted.uncertain)}; all {JOBS} submitted in {submitted_s:.1f}s"
        )
        log.warning(summary)
        print(summary)  # noqa: T201
        assert len(job_ids) == JOBS and len(set(job_ids)) == JOBS, summary
        # Exactly one job per logical request, and it is the one the client was answered.
        assert sorted(made) == list(range(JOBS)), summary
        assert {k: ids for k, ids in made.items() if len(ids) != 1} == {}, summary
        assert {ids[0] for ids in made.values()} == set(job_ids), summary
        assert verdict.delivered == JOBS and verdict.lost == [] and verdict.duplicated == [], summary
        assert verdict.failed_outputs == {}, summary
        # One completion event per job, and none for a job nobody was answered with (no job made
        # by an attempt whose answer was lost, then made again by its retry).
        assert verdict.without_webhook == [] and verdict.distinct_events_over_one == [], summary
        assert verdict.unknown_hooks == 0 and verdict.ambiguous_hooks == 0, summary
        assert submitted.uncertain, "no submission met a killed API: the test proved nothing"
        assert int(client.get(keys.backlog(PIPELINE)) or 0) == 0  # every item counted out
        assert stack.log().count(" exited unexpectedly, killed by SIGKILL") == len(KILL_AT)
    finally:
        stop.set()
        client.close()
        stop_stack(stack)
