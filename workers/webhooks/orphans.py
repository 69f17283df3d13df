"""Deliveries left behind by a notifier that died, found within seconds and queued again at once.

A notifier's rq workers are threads of one process (workers/webhooks/rqthreads.py). When the
process dies (SIGKILL, OOM, a crash) each delivery one of them was making stays in rq's
StartedJobRegistry, `started` under a worker that will never finish it; rq itself takes such a
job back only once its execution's heartbeat lapses (the attempt's timeout plus a minute) and
a maintenance pass runs, then waits its retry interval: minutes. So every notifier looks, when
it starts and every DLPIPE_HEARTBEAT_INTERVAL_MS after, for

- started jobs whose rq worker is dead: its rq worker hash is gone or records its death, or it
  names a notifier (rqthreads.NOTIFIER_FIELD) with no live heartbeat (keys.WORKERS, within
  DLPIPE_WORKER_TTL_MS: the test /readyz applies). A job whose execution record is gone, or
  whose rq worker names no notifier (one started by other tools), is left to rq;
- jobs an rq worker took off the queue (rq's intermediate queue) and did not start within
  DLPIPE_WORKER_TTL_MS (a worker starts a job it took within milliseconds);

and queues each again, at the front, in one transaction that also records the attempt that
was in flight as interrupted in the delivery's history (shared/webhooks.py INTERRUPT). The
same rq job runs again: the same delivery, the same `webhook-id`. The transaction WATCHes the
rq job's hash, checks the job is still where it was seen, and rewrites the hash: with several
notifiers looking, one queues it and the others' transactions change nothing. An interrupted
attempt spends one of the job's crash retries (rqthreads.CRASH_RETRY), as rq's own clean-up
would: with none left the rq job fails and the delivery is dead-lettered, so a delivery that
kills every notifier that tries it cannot do so forever.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from rq import Queue
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.job_lifecycle import record_job_failure
from rq.worker import SimpleWorker

from shared import codecs, keys
from shared.heartbeat import is_live
from shared.messages import now_ms
from shared.redis import webhooks as webhook_scripts
from shared.settings import Settings
from workers import runtime
from workers.webhooks.attempt import FUNCTION
from workers.webhooks.rqthreads import NOTIFIER_FIELD

log = logging.getLogger("workers.webhooks")

GAVE_UP = "interrupted: its notifier died during each of its attempts (rq's crash retries are spent)"


# -- which jobs are orphaned (pure) ------------------------------------------------------


@dataclass(frozen=True)
class RqWorker:
    """What an rq worker's hash says of it."""

    exists: bool  # the hash is there (rq writes `birth` when the worker starts)
    died: bool = False  # rq recorded its death
    notifier: str | None = None  # the notifier it is a thread of (None: not a notifier's)


@dataclass(frozen=True)
class Running:
    """An entry of rq's StartedJobRegistry: a job, one execution of it, the worker running it."""

    job_id: str
    execution_id: str
    worker: str  # '' when the execution's record is gone


def worker_dead(worker: RqWorker, beat_ms: float | None, now: int, ttl_ms: int) -> bool:
    """Is this rq worker dead? `beat_ms`: its notifier's last heartbeat (None: none)."""
    if not worker.exists or worker.died:
        return True
    if worker.notifier is None:
        return False  # not a notifier's thread: rq's own clean-up decides
    return not is_live(beat_ms, now, ttl_ms)


def orphaned(
    running: Iterable[Running],
    workers: Mapping[str, RqWorker],
    beats: Mapping[str, float | None],
    now: int,
    ttl_ms: int,
) -> list[Running]:
    """The started jobs whose rq worker is dead (`workers` by name, `beats` by notifier)."""
    found = []
    for entry in running:
        if not entry.worker:
            continue  # its execution expired: rq's clean-up takes it now
        worker = workers.get(entry.worker, RqWorker(exists=False))
        beat = beats.get(worker.notifier) if worker.notifier else None
        if worker_dead(worker, beat, now, ttl_ms):
            found.append(entry)
    return found


def stuck(
    taken: Sequence[str], started: set[str], first_seen: Mapping[str, float], now_s: float, grace_s: float
) -> tuple[list[str], dict[str, float]]:
    """Jobs taken off the queue (`taken`) but not started for `grace_s`, and when each job taken
    and not started was first seen (the `first_seen` of the next call)."""
    seen: dict[str, float] = {}
    found = []
    for job_id in taken:
        if job_id in started:
            continue
        seen[job_id] = first_seen.get(job_id, now_s)
        if now_s - seen[job_id] >= grace_s:
            found.append(job_id)
    return found, seen


# -- finding and queueing them -------------------------------------------------------------


class Recovery:
    """Finds the deliveries of dead notifiers and queues them again (see the module's docstring)."""

    def __init__(self, client: redis.Redis, queue: Queue, settings: Settings) -> None:
        self.redis = client
        self.queue = queue
        self.ttl_ms = settings.worker_ttl_ms
        self.interval_s = settings.heartbeat_interval_ms / 1000
        self.job_ttl_s = settings.job_ttl_s
        self.first_seen: dict[str, float] = {}

    def run(self, stop: threading.Event) -> None:
        def step() -> None:
            self.run_once()
            stop.wait(self.interval_s)

        runtime.run_loop("webhook recovery", step, stop, recover=lambda: None)

    def run_once(self) -> int:
        """One look; returns the rq jobs queued again."""
        running = self._running()
        taken = self.queue.intermediate_queue.get_job_ids()
        workers = self._workers({entry.worker for entry in running if entry.worker})
        beats = self._beats({w.notifier for w in workers.values() if w.notifier})
        lost = orphaned(running, workers, beats, now_ms(), self.ttl_ms)
        started = {entry.job_id for entry in running}
        parked, self.first_seen = stuck(taken, started, self.first_seen, time.monotonic(), self.ttl_ms / 1000)
        return sum(self.requeue(entry.job_id, entry) for entry in lost) + sum(
            self.requeue(job_id, None) for job_id in parked
        )

    def _running(self) -> list[Running]:
        ids = self.queue.started_job_registry.get_job_and_execution_ids(cleanup=False)
        if not ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for job_id, execution_id in ids:
            pipe.hget(Execution(execution_id, job_id, self.redis).key, "worker_name")
        return [
            Running(j, e, codecs.text(w) if w else "") for (j, e), w in zip(ids, pipe.execute(), strict=True)
        ]

    def _workers(self, names: set[str]) -> dict[str, RqWorker]:
        ordered = sorted(names)
        pipe = self.redis.pipeline(transaction=False)
        for name in ordered:
            pipe.hmget(SimpleWorker.redis_worker_namespace_prefix + name, ["birth", "death", NOTIFIER_FIELD])
        return {
            name: RqWorker(
                exists=birth is not None, died=death is not None, notifier=codecs.text(n) if n else None
            )
            for name, (birth, death, n) in zip(ordered, pipe.execute() if ordered else [], strict=True)
        }

    def _beats(self, notifiers: set[str]) -> dict[str, float | None]:
        ordered = sorted(notifiers)
        pipe = self.redis.pipeline(transaction=False)
        for notifier in ordered:
            pipe.zscore(keys.WORKERS, notifier)
        return dict(zip(ordered, pipe.execute() if ordered else [], strict=True))

    def requeue(self, job_id: str, running: Running | None) -> bool:
        """Queue rq job `job_id` again if it is still where it was seen: `running` (started under a
        dead worker), or taken off the queue and not started (None). False: it moved on, or
        another notifier queued it first."""
        with self.redis.pipeline() as pipe:
            try:
                pipe.watch(Job.key_for(job_id))
                job = self.queue.fetch_job(job_id)
                if job is None or not self._still_there(pipe, job, running):
                    return False
                cut = running is not None and job.get_status(refresh=False) == JobStatus.STARTED
                give_up = cut and not (job.retries_left and job.retries_left > 0)
                pipe.multi()
                pipe.lrem(self.queue.intermediate_queue_key, 0, job_id)
                if running is not None:
                    Execution(running.execution_id, job_id, self.redis, running.worker).delete(job, pipe)
                if give_up:
                    record_job_failure(job, GAVE_UP, pipe)
                else:
                    if cut:
                        job.retries_left = (job.retries_left or 1) - 1
                    self.queue.enqueue_job(job, pipeline=pipe, at_front=True)
                delivery = _delivery_of(job)
                if running is not None and delivery is not None:
                    webhook_scripts.webhook_interrupt(
                        delivery=delivery[1],
                        round_=delivery[2],
                        now=now_ms(),
                        ttl_s=self.job_ttl_s,
                        give_up=give_up,
                    ).queue(pipe)
                pipe.execute()
            except redis.WatchError:
                return False
        what = f"rq job {job_id}" if delivery is None else "job={} webhook {} round {}".format(*delivery)
        if running is None:
            log.warning("%s: taken off the queue by a worker that never started it; queued again", what)
        elif give_up:
            log.error("%s: its notifier died during each attempt; dead-lettered", what)
        else:
            log.warning("%s: its notifier died (rq worker %s); queued again", what, running.worker)
        return True

    def _still_there(self, pipe: Any, job: Job, running: Running | None) -> bool:
        status = job.get_status(refresh=False)
        if running is None:  # taken, never started
            taken = pipe.lpos(self.queue.intermediate_queue_key, job.id) is not None
            return status == JobStatus.QUEUED and taken
        member = Execution(running.execution_id, job.id, self.redis).composite_key
        if pipe.zscore(self.queue.started_job_registry.key, member) is None:
            return False
        if status == JobStatus.STARTED:
            return job.worker_name == running.worker  # else: a later run of it, elsewhere
        return status == JobStatus.QUEUED  # its worker died before marking it started


def _delivery_of(job: Job) -> tuple[str, str, int] | None:
    """(job id, delivery id, round) of an rq job of a delivery (attempt.run_delivery's arguments)."""
    if job.func_name != FUNCTION or len(job.args) != 3:
        return None
    job_id, delivery, round_ = job.args
    return str(job_id), str(delivery), int(round_)
