"""Chaos: 500 jobs through the real stack (`dlpipe up`) while every worker kind is SIGKILLed
twice. After a full drain no job is lost and none is recorded twice; each job's completion
webhook arrived once (one distinct `webhook-id`), or, where a notifier kill cut its attempt,
rq holds it to run again. Jepsen-style: every job that got a 202 is counted as delivered,
lost or duplicated.

The kills follow the work: the k-th kill comes once enough jobs have finished, and only after
the previous kill's kind has recovered (a new worker of that kind has a live heartbeat and
that kind's own progress counter moved again). Kills, in turn: the preprocess worker process
(`python -m workers.preprocess --child`, restarted by `dlpipe worker preprocess`), the model
worker, the notifier, then `dlpipe worker preprocess` itself (restarted by `dlpipe up`; its
orphaned child stops by itself), the model worker and the notifier again. Streams are
trimmed every 2 s all along. The webhook receiver answers each POST after 0.25 s, so each
notifier kill finds deliveries sent but not yet recorded (the at-least-once case).

A summary goes to the log (`pytest -m chaos -s` prints it; a failure shows it): jobs, kills
per kind, lost, duplicated, webhook counts, and each kill's recovery time.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from shared import keys
from tests.e2e.chaos import (
    Receiver,
    check,
    delivery_state,
    retry_pending,
    finished,
    image_classify_only,
    live_workers,
    processes,
    redis_url_of,
    stream_keys,
    submit_jobs,
    tiny_jpegs,
    unfinished_entries,
)
from tests.e2e.conftest import Stack, start_stack, stop_stack
from tests.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.chaos]

log = logging.getLogger("tests.chaos")

JOBS = int(os.environ.get("DLPIPE_CHAOS_JOBS", "500"))
WEBHOOK_WAIT_S = float(os.environ.get("DLPIPE_CHAOS_WEBHOOK_WAIT_S", "15"))
# Set (seconds) to also wait for rq to retry the deliveries cut by notifier kills, and count
# the duplicate POSTs that follows (minutes: rq retries an abandoned job once its heartbeat lapses).
AWAIT_REDELIVERY_S = float(os.environ.get("DLPIPE_CHAOS_AWAIT_REDELIVERY_S", "0"))
RECEIVER_DELAY_S = 0.25  # each webhook answered after this: a notifier kill finds some in flight
WORKER_TTL_MS = 2000
MODEL = "efficientnet_lite0"
# (what to kill, the heartbeat kind it stands for), in order
KILLS = [
    ("preprocess worker", "preprocess"),
    ("model worker", "model"),
    ("notifier", "notifier"),
    ("dlpipe worker preprocess", "preprocess"),
    ("model worker", "model"),
    ("notifier", "notifier"),
]


@dataclass
class Kill:
    what: str
    kind: str
    pid: int
    at_finished: int  # jobs finished when it was killed
    replaced_s: float = 0.0  # kill -> a new worker of that kind has a live heartbeat
    resumed_s: float = 0.0  # kill -> that kind's own progress counter moved again


def target_pid(stack: Stack, what: str) -> int:
    if what == "preprocess worker":
        (parent,) = processes(stack.proc.pid, "worker", "preprocess")
        (pid,) = processes(parent, "workers.preprocess", "--child")
        return pid
    tail = {"dlpipe worker preprocess": ("worker", "preprocess"), "model worker": ("worker", "model"),
            "notifier": ("worker", "notifier")}[what]  # fmt: skip
    (pid,) = processes(stack.proc.pid, *tail)
    return pid


def test_nothing_is_lost_while_workers_are_killed(tmp_path: Path) -> None:
    with Receiver(delay_s=RECEIVER_DELAY_S) as receiver:
        env = {
            "DLPIPE_PIPELINES_FILE": str(image_classify_only(tmp_path / "pipelines.yaml")),
            "DLPIPE_LEASE_MS": "1500",
            "DLPIPE_WORKER_TTL_MS": str(WORKER_TTL_MS),
            "DLPIPE_HEARTBEAT_INTERVAL_MS": "250",
            "DLPIPE_READ_BLOCK_MS": "200",
            "DLPIPE_TORCH_THREADS": "1",
            "DLPIPE_STREAM_TRIM_INTERVAL_S": "2",
            "DLPIPE_WEBHOOK_ALLOW_PRIVATE": "true",  # the receiver is on 127.0.0.1
            "DLPIPE_WEBHOOK_RETRY_SCHEDULE_S": "0,1,1,2",
            "DLPIPE_WEBHOOK_TIMEOUT_S": "5",
        }
        started = time.monotonic()
        stack = start_stack(tmp_path, env)
        try:
            run_chaos(stack, receiver, started)
        finally:
            stop_stack(stack)


def run_chaos(stack: Stack, receiver: Receiver, started: float) -> None:
    client = redis.Redis.from_url(redis_url_of(stack.log()))
    ready_s = time.monotonic() - started
    images = tiny_jpegs()
    submitted = submit_jobs(stack.base_url, 1, images, receiver.url, threads=1)  # the first job alone
    submitting = threading.Thread(
        target=submit_jobs, args=(stack.base_url, JOBS - 1, images, receiver.url, 4, submitted)
    )
    t0 = time.monotonic()
    submitting.start()

    def accepted() -> list[str]:
        with submitted.lock:
            return list(submitted.accepted)

    def counter(kind: str) -> int:
        if kind == "preprocess":  # finished items: only a preprocess worker runs the last stage
            return finished(client, accepted())
        if kind == "model":
            return int(client.hget(keys.model_stats(MODEL), "items") or 0)
        return receiver.count()  # only the notifier POSTs

    kills: list[Kill] = []
    try:
        for k, (what, kind) in enumerate(KILLS):
            threshold = (k + 1) * JOBS // (len(KILLS) + 4)  # spread over the first ~60% of the run
            wait_until(lambda: finished(client, accepted()) >= threshold, 90, f"{threshold} jobs finished")
            before = set(live_workers(client, kind, WORKER_TTL_MS).values())
            pid = target_pid(stack, what)
            kill = Kill(what, kind, pid, finished(client, accepted()))
            t_kill = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            wait_until(
                lambda: set(live_workers(client, kind, WORKER_TTL_MS).values()) - before - {pid},
                60, f"a new {kind} worker after killing the {what}", interval_s=0.02,
            )  # fmt: skip
            kill.replaced_s = time.monotonic() - t_kill
            at_live = counter(kind)
            wait_until(lambda: counter(kind) > at_live, 60, f"{kind} progress after the kill", 0.02)
            kill.resumed_s = time.monotonic() - t_kill
            kills.append(kill)
            log.warning(
                "chaos: killed the %s (pid %d) at %d/%d finished jobs: replaced in %.2fs, progress in %.2fs",
                what, pid, kill.at_finished, JOBS, kill.replaced_s, kill.resumed_s,
            )  # fmt: skip
        submitting.join(120)
        assert not submitting.is_alive(), "submitting took too long"
        job_ids = accepted()
        assert len(job_ids) == JOBS and not submitted.refused, submitted.refused  # the API was never killed

        wait_until(lambda: finished(client, job_ids) == len(job_ids), 120, "every accepted job to finish")
        drained_s = time.monotonic() - t0
        try:
            wait_until(lambda: {h.job_id for h in receiver.completed()} >= set(job_ids), WEBHOOK_WAIT_S, "")
        except AssertionError:
            pass  # the verdict counts the missing ones, and says where they are
        hooked_s = time.monotonic() - t0
        wait_until(lambda: not any(unfinished_entries(client).values()), 30, "every entry acknowledged")
        # Trimming ran all along: each stream is down to (at most) its last delivered entry.
        wait_until(lambda: all(client.xlen(s) <= 1 for s in stream_keys(client)), 30, "the streams trimmed")

        verdict = check(stack.base_url, client, job_ids, receiver.hooks)
        late = {j: delivery_state(client, j) for j in verdict.without_webhook}
        in_doubt = deliveries_in_doubt(client, job_ids, receiver)
        if AWAIT_REDELIVERY_S and in_doubt[0]:
            t_wait = time.monotonic()
            try:
                settled = lambda: deliveries_in_doubt(client, job_ids, receiver)[0] == 0  # noqa: E731
                wait_until(settled, AWAIT_REDELIVERY_S, "")
            except AssertionError:
                pass
            log.warning(
                "chaos: after %.0fs more: %s; still in doubt: %s",
                time.monotonic() - t_wait, check(stack.base_url, client, job_ids, receiver.hooks).summary(),
                deliveries_in_doubt(client, job_ids, receiver),
            )  # fmt: skip
    finally:
        client.close()
    per_kind = Counter(k.kind for k in kills)
    summary = "\n".join(
        [
            f"chaos: {verdict.summary()}",
            f"chaos: kills per kind {dict(per_kind)}; stack ready in {ready_s:.1f}s; drained "
            f"{JOBS} jobs in {drained_s:.1f}s, last webhook at {hooked_s:.1f}s",
            f"chaos: completion webhooks not received within the run, by delivery state: "
            f"{dict(Counter(late.values()))}",
            f"chaos: deliveries cut mid-attempt by a notifier kill (state delivering): {in_doubt[0]}, "
            f"of which the receiver got the POST (rq's retry will send it again, same webhook-id): "
            f"{in_doubt[1]}",
            *(
                f"chaos: kill {n + 1}: {k.what} pid {k.pid} at {k.at_finished} finished: "
                f"replacement live after {k.replaced_s:.2f}s, progress after {k.resumed_s:.2f}s"
                for n, k in enumerate(kills)
            ),
        ]
    )
    log.warning("\n%s", summary)
    print(summary)  # noqa: T201 - the summary this test exists for (pytest -s shows it)
    assert per_kind == {"preprocess": 2, "model": 2, "notifier": 2}
    assert verdict.jobs == JOBS and verdict.delivered == JOBS, summary
    assert verdict.lost == [] and verdict.duplicated == [], summary
    assert verdict.failed_outputs == {}, summary
    assert verdict.distinct_events_over_one == [] and verdict.unknown_hooks == 0, summary  # <= 1 event a job
    # Every job's completion webhook arrived, or its delivery was cut by a notifier kill and
    # rq holds it to run again (an abandoned job, retried once its heartbeat lapses): late, not lost.
    assert all(retry_pending(state) for state in late.values()), summary
    assert len(late) <= in_doubt[0], summary


def deliveries_in_doubt(client: redis.Redis, job_ids: list[str], receiver: Receiver) -> tuple[int, int]:
    """Completion deliveries left `delivering` (their attempt cut by a notifier kill, not retried
    yet), and how many of those the receiver got anyway (their retry will be a duplicate POST)."""
    pipe = client.pipeline(transaction=False)
    for job_id in job_ids:
        pipe.hget(keys.job_webhook(job_id), "completed")
    ids = [d.decode() for d in pipe.execute() if d]
    for delivery in ids:
        pipe.hget(keys.webhook(delivery), "state")
    cut = {d for d, state in zip(ids, pipe.execute(), strict=True) if state == b"delivering"}
    received = {h.webhook_id for h in receiver.completed()}
    return len(cut), len(cut & received)
