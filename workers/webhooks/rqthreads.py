"""rq inside the notifier process: the delivery queue, worker threads and the scheduler thread.

Deliveries are rq jobs on one queue (keys.WEBHOOK_QUEUE), serialized as JSON (never pickle),
so they outlive the process and show in rq's own tools (`rq info`, the failed and scheduled
registries). The notifier runs `webhook_concurrency` rq workers as threads of its own
process: a delivery is network waiting, so threads give concurrency without a process (or a
fork) per attempt, and a slow or dead receiver holds one thread at most until its attempt's
deadline, never the others. Each thread is an rq SimpleWorker registered under its own name,
whose signal handling is left to the notifier's main thread, whose job timeout is the
attempt's own deadline (no SIGALRM outside the main thread) and whose blocking dequeue wakes
every second to see a stop. rq's scheduler, which moves retries whose delay has passed (rq
`Retry` intervals) back to the queue, runs as one more thread instead of the forked process
rq would start.

ThreadWorker overrides methods of rq's SimpleWorker, some private, and reads its private stop
flag: rq is pinned (constraints.txt), and tests/unit/test_rq_seam.py fails on an rq whose methods
moved or changed shape.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any

import redis
from rq import Queue, Retry
from rq.exceptions import DuplicateJobError, StopRequested
from rq.job import Job
from rq.scheduler import RQScheduler
from rq.scripts import release_lock
from rq.serializers import JSONSerializer
from rq.timeouts import BaseDeathPenalty
from rq.worker import SimpleWorker

from shared import keys
from shared import webhooks as state
from shared.backoff import Backoff
from shared.heartbeat import is_live
from shared.messages import now_ms
from workers.webhooks.attempt import FUNCTION, DeliveryDead, due_at

log = logging.getLogger("workers.webhooks")

POLL_S = 1  # how long an idle worker thread blocks on the queue before looking at its stop flag
NOTIFIER_FIELD = "notifier"  # in an rq worker's hash: the notifier (heartbeat id) it is a thread of
RESULT_TTL_S = 600  # how long rq keeps a finished delivery job (`rq info`, dashboards)
THROTTLE_S = 1.0  # at most one rq heartbeat and one `rq suspend` check per worker per second
SCHEDULER_INTERVAL_S = 0.5
SCHEDULER_PREFIX = "dlpipe-notifier:"  # + the notifier's heartbeat id: rq scheduler names (lock holders)
MAINTENANCE_INTERVAL_S = 30  # rq's clean-up: jobs of a worker that died are retried from here
# rq's own retries of one round: after an unexpected error in the job (Redis gone) or when the
# notifier died mid-attempt (workers/webhooks/orphans.py queues it again at once, rq's clean-up
# after its interval); delivery failures use returned Retry.
CRASH_RETRY = Retry(max=5, interval=[10, 30, 60, 300, 600])
RQ_LOGGERS = ("rq.worker", "rq.job", "rq.queue", "rq.scheduler", "rq.registry", "rq.results")


def quiet_rq() -> None:
    """rq logs each job at INFO; the notifier logs each delivery itself."""
    for name in RQ_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def delivery_queue(client: redis.Redis) -> Queue:
    return Queue(keys.WEBHOOK_QUEUE, connection=client, serializer=JSONSerializer)


def job_timeout_s(attempt_timeout_s: float) -> int:
    """rq's limit for one attempt, above its own deadline. rq takes a job as abandoned (its
    worker died) this long plus a minute after it started: about 1.5 min with 15 s attempts."""
    return int(attempt_timeout_s) + 10


def enqueue(
    queue: Queue, job: str, delivery: str, round_: int, delay_s: float, attempt_timeout_s: float, ttl_s: int
) -> bool:
    """Queue round `round_` of a delivery of an event of `job` (after `delay_s`), once: False if
    it is queued already. (No rq `ttl`: a job waiting hours for its next retry must not expire.)"""
    options: dict[str, Any] = {
        "job_id": state.rq_job_id(delivery, round_),
        "timeout": job_timeout_s(attempt_timeout_s),
        "result_ttl": min(ttl_s, RESULT_TTL_S),  # the delivery's own record keeps the history
        "failure_ttl": ttl_s,  # dead-lettered ones stay in rq's failed registry as long as the job
        "retry": CRASH_RETRY,
        "description": f"webhook {delivery} round {round_}",
        "unique": True,
    }
    try:
        if delay_s > 0:
            due = datetime.fromtimestamp(due_at(delay_s, time.time()), tz=UTC)
            queue.enqueue_at(due, FUNCTION, job, delivery, round_, **options)
        else:
            queue.enqueue_call(FUNCTION, args=(job, delivery, round_), **options)
    except DuplicateJobError:
        return False
    return True


class AttemptDeadline(BaseDeathPenalty):
    """rq's job timeout, as a no-op: an attempt ends at its own deadline (the sender's watchdog
    shuts its socket), and every Redis call has a socket timeout. (rq's SIGALRM penalty works
    only in the main thread; its timer penalty starts a thread per job and raises into it.)"""

    def setup_death_penalty(self) -> None:
        pass

    def cancel_death_penalty(self) -> None:
        pass


class ThreadWorker(SimpleWorker):
    """An rq worker that runs in a thread of the notifier (see the module's docstring)."""

    death_penalty_class = AttemptDeadline
    log_result_lifespan = False

    def __init__(self, *args: Any, stop: threading.Event, notifier: str, **kwargs: Any) -> None:
        """`stop` set: finish the delivery in hand, then leave `work()` (within POLL_S when idle).
        `notifier`: the heartbeat id of the notifier process this worker is a thread of."""
        kwargs.setdefault("serializer", JSONSerializer)
        kwargs.setdefault("maintenance_interval", MAINTENANCE_INTERVAL_S)
        self.stop = stop
        self.notifier = notifier
        self._beat_at = self._suspension_at = float("-inf")
        super().__init__(*args, **kwargs)

    def serialize(self) -> dict[str, Any]:
        """rq's worker hash, naming its notifier: a worker whose notifier's heartbeat lapsed is
        dead, and its deliveries are queued again (workers/webhooks/orphans.py)."""
        return {**super().serialize(), NOTIFIER_FIELD: self.notifier}

    # rq announces the worker (3 commands) ~5 times and checks `rq suspend` once per job: the
    # bulk of its cost for a short job. Once a second is plenty for a worker whose TTL is minutes.
    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        if pipeline is None and timeout is None:
            if time.monotonic() - self._beat_at < THROTTLE_S:
                return
            self._beat_at = time.monotonic()
        super().heartbeat(timeout, pipeline)

    def check_for_suspension(self, burst: bool) -> None:
        if time.monotonic() - self._suspension_at >= THROTTLE_S:
            self._suspension_at = time.monotonic()
            super().check_for_suspension(burst)

    @property
    def dequeue_timeout(self) -> int:
        return POLL_S

    def _install_signal_handlers(self) -> None:
        pass  # the notifier's main thread owns SIGTERM/SIGINT

    def subscribe(self) -> None:
        pass  # no pub/sub command thread per worker: the notifier is stopped by its signals

    def unsubscribe(self) -> None:
        pass

    def procline(self, message: str) -> None:
        pass  # keep `ps` showing `dlpipe worker notifier`

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None) -> Any:
        if timeout is None:  # burst mode (tests, tools): take what is there, never wait
            return super().dequeue_job_and_maintain_ttl(None, max_idle_time)
        while True:
            if self._stop_requested or self.stop.is_set():
                raise StopRequested()
            result = super().dequeue_job_and_maintain_ttl(POLL_S, max_idle_time=POLL_S)
            if result is not None:
                return result

    def handle_exception(self, job: Job, *exc_info: Any) -> None:
        if isinstance(exc_info[1], DeliveryDead):
            return  # logged by the delivery itself; rq still files the job as failed
        super().handle_exception(job, *exc_info)


def run_worker(queue: Queue, notifier: str, n: int, stop: threading.Event) -> None:
    """rq worker number `n` of a notifier, as a thread, until `stop`; a worker that quits on an
    error (Redis gone) is replaced, under a new name, after a growing delay."""
    name = f"{notifier}-{n}"
    next_delay = Backoff().delays()
    for generation in itertools.count():
        worker_name = f"{name}.{generation}"
        try:
            # Inside the try: making an rq worker talks to Redis (CLIENT SETNAME), and a thread
            # that died of a Redis outage here would stop the whole notifier.
            worker = ThreadWorker(
                [queue], name=worker_name, connection=queue.connection, stop=stop, notifier=notifier
            )
            worker.work(logging_level=None)
        except Exception as exc:  # noqa: BLE001 - logged; the thread goes on
            log.warning("rq worker %s: %s: %s", worker_name, type(exc).__name__, exc)
        if stop.is_set():
            return
        delay = next_delay()
        log.warning("rq worker %s stopped; a new one in %.1fs", worker_name, delay)
        stop.wait(delay)


def run_scheduler(
    client: redis.Redis,
    notifier: str,
    worker_ttl_ms: int,
    stop: threading.Event,
    interval_s: float = SCHEDULER_INTERVAL_S,
) -> None:
    """rq's scheduler loop (RQScheduler.work) in this thread until `stop`: due retries to the queue.

    Only one scheduler holds a queue's lock at a time: with several notifiers, one schedules.
    A notifier that dies holding it leaves the lock for rq's lock TTL (a minute), and rq's
    scheduler tries for a lock again only every two minutes: retries would wait that long. So
    while this one holds no lock it asks every step, first releasing a lock whose holder is a
    notifier with no live heartbeat (release_dead_lock).
    """
    scheduler = RQScheduler(
        [keys.WEBHOOK_QUEUE],
        connection=client,
        interval=1,
        serializer=JSONSerializer,
        logging_level=logging.WARNING,
        name=SCHEDULER_PREFIX + notifier,
    )
    lock_key = RQScheduler.get_locking_key(keys.WEBHOOK_QUEUE)
    try:
        while not stop.is_set():
            try:
                if scheduler.pid == 0:
                    scheduler.register_birth()
                if not scheduler.acquired_locks:
                    release_dead_lock(client, lock_key, worker_ttl_ms)
                    scheduler.acquire_locks()
                scheduler.heartbeat()
                scheduler.enqueue_scheduled_jobs()
            except redis.RedisError as exc:
                log.warning("webhook scheduler: redis error (%s); retrying", exc)
            stop.wait(interval_s)
    finally:
        try:
            scheduler.stop()
        except redis.RedisError as exc:
            log.warning("webhook scheduler: could not release its locks: %s", exc)


def release_dead_lock(client: redis.Redis, lock_key: str, worker_ttl_ms: int) -> bool:
    """Release the scheduler lock if a notifier holds it whose heartbeat (keys.WORKERS) has
    lapsed; a lock held by a scheduler dlpipe did not start is left to rq's own expiry."""
    holder = client.get(lock_key)
    name = holder.decode() if isinstance(holder, bytes) else holder
    if not name or not name.startswith(SCHEDULER_PREFIX):
        return False
    if is_live(client.zscore(keys.WORKERS, name.removeprefix(SCHEDULER_PREFIX)), now_ms(), worker_ttl_ms):
        return False
    released = release_lock(client, lock_key, name)  # only if it still holds it
    if released:
        log.warning("webhook scheduler: released the lock of %s, a notifier that is gone", name)
    return bool(released)
