"""Redis is SIGKILLed mid-run and started again on the same port and data: no job that got a
202 is lost, every process of the stack rides out the outage (same pids after it), /readyz
says 503 while Redis is away and a submission gets 503, not 500.

Two ways: a Redis this test starts (DLPIPE_REDIS_URL) and starts again itself, after every
worker has backed off; and `dlpipe up`'s embedded Redis, which `dlpipe up` itself restarts.
Both with `appendfsync always`: every write, a job's included, is fsynced before Redis
answers, so a 202 means the job is on disk (docs/reliability.md). Jobs are submitted all along
by a client that retries what is refused.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

from shared.embedded_redis import start_redis
from tests.e2e.chaos import (
    Submitted,
    Verdict,
    check,
    delivery_state,
    finished,
    image_classify_only,
    processes,
    redis_url_of,
    retry_pending,
    submit_jobs,
    tiny_jpegs,
    unfinished_entries,
)
from tests.e2e.conftest import Stack, start_stack, stop_stack
from tests.e2e.receiver import Receiver
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

log = logging.getLogger("tests.redis_restart")

JOBS = 200
KILL_AFTER = 60  # accepted jobs before Redis is killed
CHILDREN = [("api",), ("worker", "preprocess"), ("worker", "model"), ("worker", "notifier")]


def stack_pids(stack: Stack) -> dict[str, set[int]]:
    pids = {" ".join(tail): processes(stack.proc.pid, *tail) for tail in CHILDREN}
    (parent,) = pids["worker preprocess"]
    pids["preprocess child"] = processes(parent, "workers.preprocess", "--child")
    return pids


RETRY_LINE = r"{role}\[\d+\] workers\.runtime: (.*?): redis unavailable.*retrying in ([\d.]+)s"


def backed_off(log_text: str, retries: int) -> bool:
    """Has each worker kind logged at least `retries` Redis retries of a loop, each after a
    longer wait (workers/runtime.py run_loop; redis-py itself retries a command for a few
    seconds first)? A process may run several loops (the notifier: its events and its
    recovery), each with its own backoff."""
    for role in ("preprocess", "model", "notifier"):
        loops: dict[str, list[float]] = {}
        for loop, delay in re.findall(RETRY_LINE.format(role=role), log_text):
            loops.setdefault(loop, []).append(float(delay))
        if not any(len(d) >= retries for d in loops.values()):
            return False
        if any(d[:retries] != sorted(d[:retries]) for d in loops.values()):
            return False
    return True


def redis_pids(stack: Stack) -> list[int]:
    """The embedded redis-server's pids, oldest first, as `dlpipe up` logs them (Redis sets
    its own process title, so its command line does not say what it is)."""
    return [int(pid) for pid in re.findall(r"started redis pid=(\d+)", stack.log())]


def readyz(stack: Stack) -> int:
    return httpx.get(f"{stack.base_url}/readyz", timeout=10).status_code


def stack_env(tmp_path: Path) -> dict[str, str]:
    return {
        "DLPIPE_PIPELINES_FILE": str(image_classify_only(tmp_path / "pipelines.yaml")),
        "DLPIPE_LEASE_MS": "1500",
        "DLPIPE_WORKER_TTL_MS": "2000",
        "DLPIPE_HEARTBEAT_INTERVAL_MS": "250",
        "DLPIPE_TORCH_THREADS": "1",
        "DLPIPE_WEBHOOK_ALLOW_PRIVATE": "true",
        "DLPIPE_WEBHOOK_RETRY_SCHEDULE_S": "0,1,1,2",
        "DLPIPE_WEBHOOK_TIMEOUT_S": "5",
    }


def start_submitting(
    stack: Stack, receiver: Receiver, stop: threading.Event
) -> tuple[Submitted, threading.Thread]:
    """JOBS jobs, two clients, each retrying a refused job every 0.1 s until `stop` is set."""
    submitted = Submitted()

    def retry(tries: int) -> bool:
        return not stop.wait(0.1)

    submitter = threading.Thread(
        target=submit_jobs, args=(stack.base_url, JOBS, tiny_jpegs(), receiver.url, 2, submitted, retry)
    )
    submitter.start()
    return submitted, submitter


@dataclass
class Settled:
    verdict: Verdict
    late: dict[str, str]  # job -> where its completion webhook is, for those not received
    drained_s: float  # from `since` to every accepted job final


def settle(
    stack: Stack,
    client: redis.Redis,
    receiver: Receiver,
    submitted: Submitted,
    submitter: threading.Thread,
    since: float,
) -> Settled:
    """Wait for every job to be accepted and to end, and judge them all (chaos.check)."""
    submitter.join(120)
    assert not submitter.is_alive()
    job_ids = list(submitted.accepted)
    assert len(job_ids) == JOBS
    assert set(submitted.refused) <= {"503"}, submitted.refused  # never a 500
    wait_until(lambda: finished(client, job_ids) == JOBS, 120, "every accepted job to finish")
    drained_s = time.monotonic() - since
    try:
        wait_until(lambda: receiver.answered_jobs() >= set(job_ids), 15, "")
    except AssertionError:
        pass  # counted below
    wait_until(lambda: not any(unfinished_entries(client).values()), 30, "every entry acknowledged")
    verdict = check(stack.base_url, client, job_ids, receiver.hooks, submitted.uncertain)
    late = {j: delivery_state(client, j) for j in verdict.without_webhook}
    return Settled(verdict, late, drained_s)


def assert_nothing_lost(stack: Stack, settled: Settled, summary: str) -> None:
    verdict = settled.verdict
    assert stack.proc.poll() is None, "dlpipe up died"
    assert "died; exiting 1" not in stack.log()  # no notifier thread died
    assert verdict.delivered == JOBS and verdict.lost == [] and verdict.duplicated == [], summary
    assert verdict.failed_outputs == {}, summary
    assert verdict.distinct_events_over_one == [] and verdict.unknown_hooks == 0, summary
    # Each completion webhook arrived, or its attempt was cut by the outage and rq holds it
    # to run again (retried once the abandoned job's heartbeat lapses): late, not lost.
    assert all(retry_pending(state) for state in settled.late.values()), summary


def test_no_accepted_job_is_lost_when_redis_is_killed_and_restarted(tmp_path: Path) -> None:
    data = tmp_path / "redis"
    proc, port = start_redis(data, appendfsync="always")
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    stack: Stack | None = None
    stop = threading.Event()  # set: the submitting client gives up what is refused
    try:
        with Receiver() as receiver:
            stack = start_stack(tmp_path, {**stack_env(tmp_path), "DLPIPE_REDIS_URL": url})
            before = stack_pids(stack)
            submitted, submitter = start_submitting(stack, receiver, stop)
            wait_until(lambda: len(submitted.accepted) >= KILL_AFTER, 60, f"{KILL_AFTER} jobs accepted")

            log_offset = len(stack.log())
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            killed_at = time.monotonic()
            wait_until(lambda: readyz(stack) == 503, 10, "/readyz 503 while redis is away")
            wait_until(lambda: submitted.refused["503"] > 0, 10, "a submission refused with 503")
            accepted_before = len(submitted.accepted)  # answers in flight at the kill are in
            # Every worker notices and retries with a growing delay (Redis stays away until each
            # worker has retried three times).
            try:
                wait_until(lambda: backed_off(stack.log()[log_offset:], 3), 60, "every worker to back off")
            except AssertionError as exc:
                lines = [x for x in stack.log()[log_offset:].splitlines() if "runtime" in x or "Error" in x]
                raise AssertionError(f"{exc}\n" + "\n".join(lines[-60:])) from None
            assert len(submitted.accepted) == accepted_before, "a 202 while redis was away"
            assert readyz(stack) == 503
            outage_s = time.monotonic() - killed_at

            proc, _ = start_redis(data, port=port, appendfsync="always")  # same port, same AOF
            restarted_at = time.monotonic()
            wait_until(lambda: readyz(stack) == 200, 60, "/readyz 200 again")
            ready_again_s = time.monotonic() - restarted_at
            settled = settle(stack, client, receiver, submitted, submitter, restarted_at)
            after = stack_pids(stack)
        summary = (
            f"redis restart: {settled.verdict.summary()}; {accepted_before} accepted before the kill, "
            f"{sum(submitted.refused.values())} submissions refused (503) during a {outage_s:.1f}s "
            f"outage (readyz 503, every worker backing off); ready again "
            f"{ready_again_s:.1f}s and drained {settled.drained_s:.1f}s after the restart; completion "
            f"webhooks not received within the run, by delivery state: {dict(Counter(settled.late.values()))}"
        )
        log.warning(summary)
        print(summary)  # noqa: T201
        assert after == before, f"a process died with redis: {before} -> {after}"  # none restarted
        assert_nothing_lost(stack, settled, summary)
    finally:
        stop.set()
        if stack is not None:
            stop_stack(stack)
        client.close()
        proc.kill()
        proc.wait()


def test_dlpipe_up_restarts_its_embedded_redis_and_no_accepted_job_is_lost(tmp_path: Path) -> None:
    stop = threading.Event()
    with Receiver() as receiver:
        stack = start_stack(tmp_path, {**stack_env(tmp_path), "DLPIPE_REDIS_APPENDFSYNC": "always"})
        client = redis.Redis.from_url(redis_url_of(stack.log()))
        try:
            before = stack_pids(stack)
            (redis_pid,) = redis_pids(stack)
            submitted, submitter = start_submitting(stack, receiver, stop)
            wait_until(lambda: len(submitted.accepted) >= KILL_AFTER, 60, f"{KILL_AFTER} jobs accepted")
            os.kill(redis_pid, signal.SIGKILL)
            killed_at = time.monotonic()
            accepted_before = len(submitted.accepted)
            # `dlpipe up` starts it again (after 1 s), on the same port and AOF: the same URL answers.
            wait_until(lambda: len(redis_pids(stack)) == 2, 30, "dlpipe up to start redis-server again")
            wait_until(lambda: readyz(stack) == 200, 60, "/readyz 200 again")
            ready_again_s = time.monotonic() - killed_at
            settled = settle(stack, client, receiver, submitted, submitter, killed_at)
            after = stack_pids(stack)
            summary = (
                f"embedded redis restart: {settled.verdict.summary()}; {accepted_before} accepted "
                f"before the kill, {sum(submitted.refused.values())} submissions refused (503); ready "
                f"again {ready_again_s:.1f}s and drained {settled.drained_s:.1f}s after the kill; "
                f"completion webhooks not received within the run: {dict(Counter(settled.late.values()))}"
            )
            log.warning(summary)
            print(summary)  # noqa: T201
            assert after == before, f"a process died with redis: {before} -> {after}"  # only Redis restarted
            text = stack.log()
            assert f"EMBEDDED REDIS DIED (redis-server pid {redis_pid})" in text
            assert "EMBEDDED REDIS RESTARTED" in text
            assert_nothing_lost(stack, settled, summary)
        finally:
            stop.set()
            client.close()
            stop_stack(stack)
