"""Chaos: 500 jobs through the real stack (`dlpipe up`) while every worker kind is SIGKILLed
twice. After a full drain no job is lost and none is recorded twice, and every job has exactly
one distinct completion `webhook-id`, which the receiver answered 2xx, within seconds of the
drain. Jepsen-style: every job that got a 202 is counted as delivered, lost or duplicated.

Webhooks are at least once: a notifier killed after the receiver got a POST and before the
answer was recorded sends it again (the same `webhook-id`) once another notifier has queued
the cut delivery again (workers/webhooks/orphans.py: seconds, not rq's minutes). The test
counts those duplicate POSTs and checks each belongs to a delivery whose history records an
attempt cut by a kill (`interrupted`), at most one per cut attempt, and at most
DLPIPE_WEBHOOK_CONCURRENCY per notifier kill; and how long each kill's cut deliveries took to
be sent again.

The kills follow the work: the k-th kill comes once enough jobs have finished, and only after
the previous kill's kind has recovered (a new worker of that kind has a live heartbeat and
that kind's own progress counter moved again). Kills, in turn: the preprocess worker process
(`python -m workers.preprocess --child`, restarted by `dlpipe worker preprocess`), the model
worker, the notifier, then `dlpipe worker preprocess` itself (restarted by `dlpipe up`; its
orphaned child stops by itself), the model worker and the notifier again. Streams are
trimmed every 2 s all along. The webhook receiver answers each POST after 0.25 s, so each
notifier kill finds deliveries sent but not yet recorded (the at-least-once case).

A summary goes to the log (`pytest -m chaos -s` prints it; a failure shows it): jobs, kills
per kind, lost, duplicated, webhook counts, duplicate POSTs, each kill's recovery time and,
for notifier kills, the time to send its cut deliveries again.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import statistics
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from shared import keys
from shared import webhooks as state
from shared.settings import Settings
from tests.e2e.chaos import (
    check,
    delivery_state,
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
from tests.e2e.receiver import Receiver
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.chaos]

log = logging.getLogger("tests.chaos")

JOBS = int(os.environ.get("DLPIPE_CHAOS_JOBS", "500"))
WEBHOOK_WAIT_S = float(os.environ.get("DLPIPE_CHAOS_WEBHOOK_WAIT_S", "15"))
REDELIVER_MAX_S = 30  # a notifier kill's cut deliveries are all sent again within this
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
    at_ms: int = 0  # wall clock of the kill (ms), as the attempts record theirs
    replaced_s: float = 0.0  # kill -> a new worker of that kind has a live heartbeat
    resumed_s: float = 0.0  # kill -> that kind's own progress counter moved again
    redeliver_s: list[float] = field(default_factory=list)  # kill -> each cut delivery POSTed again


def target_pid(stack: Stack, what: str) -> int:
    if what == "preprocess worker":
        (parent,) = processes(stack.proc.pid, "worker", "preprocess")
        (pid,) = processes(parent, "workers.preprocess", "--child")
        return pid
    tail = {
        "dlpipe worker preprocess": ("worker", "preprocess"),
        "model worker": ("worker", "model"),
        "notifier": ("worker", "notifier"),
    }[what]
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
            kill.at_ms = int(time.time() * 1000)
            os.kill(pid, signal.SIGKILL)
            with stalled(stack, client, f"kill {k + 1} ({what}, pid {pid})"):
                wait_until(
                    lambda: set(live_workers(client, kind, WORKER_TTL_MS).values()) - before - {pid},
                    60,
                    f"a new {kind} worker after killing the {what}",
                    interval_s=0.02,
                )
                kill.replaced_s = time.monotonic() - t_kill
                at_live = counter(kind)
                wait_until(lambda: counter(kind) > at_live, 60, f"{kind} progress after the kill", 0.02)
            kill.resumed_s = time.monotonic() - t_kill
            kills.append(kill)
            log.warning(
                "chaos: killed the %s (pid %d) at %d/%d finished jobs: replaced in %.2fs, progress in %.2fs",
                what,
                pid,
                kill.at_finished,
                JOBS,
                kill.replaced_s,
                kill.resumed_s,
            )
        submitting.join(120)
        assert not submitting.is_alive(), "submitting took too long"
        job_ids = accepted()
        assert len(job_ids) == JOBS and not submitted.refused, submitted.refused  # the API was never killed

        wait_until(lambda: finished(client, job_ids) == len(job_ids), 120, "every accepted job to finish")
        drained_s = time.monotonic() - t0
        try:  # every completion webhook answered, and every delivery done (no redelivery to come)
            wait_until(lambda: receiver.answered_jobs() >= set(job_ids), WEBHOOK_WAIT_S, "")
            wait_until(lambda: delivery_states(client, job_ids) == {"succeeded"}, WEBHOOK_WAIT_S, "")
        except AssertionError:
            pass  # the verdict counts the missing ones, and says where they are
        hooked_s = time.monotonic() - t0
        wait_until(lambda: not any(unfinished_entries(client).values()), 30, "every entry acknowledged")
        # Trimming ran all along: each stream is down to (at most) its last delivered entry.
        wait_until(lambda: all(client.xlen(s) <= 1 for s in stream_keys(client)), 30, "the streams trimmed")

        verdict = check(stack.base_url, client, job_ids, receiver.hooks)
        late = {j: delivery_state(client, j) for j in verdict.without_webhook}
        cut = cut_attempts(client, job_ids)
        notifier_kills = [k for k in kills if k.kind == "notifier"]
        never = redelivery_times(notifier_kills, cut)
    finally:
        client.close()
    per_kind = Counter(k.kind for k in kills)
    concurrency = Settings.model_fields["webhook_concurrency"].default  # the stack's: not set here
    not_cut = {d: n for d, n in verdict.duplicates.items() if n > len(cut.get(d, []))}
    summary = "\n".join(
        [
            f"chaos: {verdict.summary()}",
            f"chaos: kills per kind {dict(per_kind)}; stack ready in {ready_s:.1f}s; drained "
            f"{JOBS} jobs in {drained_s:.1f}s, webhooks answered and recorded (or the wait given up) "
            f"at {hooked_s:.1f}s",
            f"chaos: completion webhooks not answered within the run, by delivery state: "
            f"{dict(Counter(late.values()))}",
            f"chaos: completion attempts cut by a notifier kill: {sum(map(len, cut.values()))} in "
            f"{len(cut)} deliveries; duplicate POSTs: {verdict.redelivered_posts} in "
            f"{len(verdict.duplicates)} deliveries (bound: {concurrency} x {len(notifier_kills)} notifier "
            f"kills); duplicates without a cut attempt to explain them: {not_cut}; cut deliveries "
            f"never sent again: {never}; POSTs torn by a kill (not deliveries): {len(receiver.torn)}",
            *(
                f"chaos: kill {n + 1}: {k.what} pid {k.pid} at {k.at_finished} finished: "
                f"replacement live after {k.replaced_s:.2f}s, progress after {k.resumed_s:.2f}s"
                + (f"; {redeliveries(k.redeliver_s)}" if k.kind == "notifier" else "")
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
    assert verdict.without_webhook == [], summary  # ... and exactly one, answered 2xx
    # At least once, honestly: each duplicate POST is the resend of an attempt a kill cut.
    assert not_cut == {}, summary
    assert verdict.redelivered_posts <= concurrency * len(notifier_kills), summary
    assert len(receiver.torn) <= concurrency * len(notifier_kills), summary  # one per sending thread
    assert never == 0 and all(t < REDELIVER_MAX_S for k in notifier_kills for t in k.redeliver_s), summary


@contextmanager
def stalled(stack: Stack, client: redis.Redis, when: str) -> Iterator[None]:
    """A wait that times out says where the work stands: the streams, the workers, the log's errors."""
    try:
        yield
    except AssertionError as exc:
        left = {stream: n for stream, n in unfinished_entries(client).items() if n}
        workers = {kind: len(live_workers(client, kind, WORKER_TTL_MS)) for kind in ("preprocess", "model")}
        noted = [line for line in stack.log().splitlines() if " ERROR " in line or " WARNING " in line]
        raise AssertionError(
            f"{when}: {exc}; unfinished entries {left}; live workers {workers}; the log's last "
            f"warnings and errors: {noted[-8:]}"
        ) from exc


def delivery_states(client: redis.Redis, job_ids: list[str]) -> set[str]:
    """The states of the jobs' completion deliveries ('none': not made yet)."""
    pipe = client.pipeline(transaction=False)
    for job_id in job_ids:
        pipe.hget(keys.job_webhook(job_id), "completed")
    ids = pipe.execute()
    for delivery in ids:
        pipe.hget(keys.webhook(delivery.decode()) if delivery else "none", "state")
    return {s.decode() if s else "none" for s in pipe.execute()}


def cut_attempts(client: redis.Redis, job_ids: list[str]) -> dict[str, list[tuple[int, int | None]]]:
    """Completion delivery -> (when it began, when the next attempt began; ms) of each of its
    attempts a notifier kill cut, as its history (GET /v1/jobs/{id}) records them; deliveries
    with none left out."""
    pipe = client.pipeline(transaction=False)
    for job_id in job_ids:
        pipe.hget(keys.job_webhook(job_id), "completed")
    ids = [d.decode() for d in pipe.execute() if d]
    for delivery in ids:
        pipe.lrange(keys.webhook_attempts(delivery), 0, -1)
    cut: dict[str, list[tuple[int, int | None]]] = {}
    for delivery, raw in zip(ids, pipe.execute(), strict=True):
        attempts = [json.loads(a) for a in raw]
        nexts = [a["at"] for a in attempts[1:]] + [None]
        pairs = zip(attempts, nexts, strict=True)
        found = [(a["at"], n) for a, n in pairs if a["error"] == state.INTERRUPTED]
        if found:
            cut[delivery] = found
    return cut


def redelivery_times(kills: list[Kill], cut: dict[str, list[tuple[int, int | None]]]) -> int:
    """For each notifier kill, how long after it each attempt it cut (begun before it, after the
    previous one) was made again: into its `redeliver_s`. Returns the cut attempts never made again."""
    never = 0
    for n, kill in enumerate(kills):
        since_ms = kills[n - 1].at_ms if n else 0
        for began, again in (c for attempts in cut.values() for c in attempts):
            if not since_ms <= began <= kill.at_ms:
                continue
            if again is None:
                never += 1
            else:
                kill.redeliver_s.append((again - kill.at_ms) / 1000)
    return never


def redeliveries(times: list[float]) -> str:
    if not times:
        return "no delivery cut"
    return (
        f"{len(times)} cut deliveries sent again after {statistics.median(times):.2f}s (median), "
        f"{max(times):.2f}s (max)"
    )
