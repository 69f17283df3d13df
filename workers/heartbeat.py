"""A worker's heartbeat: a daemon thread announcing what it serves (see shared/heartbeat.py).

A thread rather than a call per step, so a long model batch does not make a busy worker
look dead. Redis errors are logged and retried at the next beat; they never stop the
thread. `stop()` (or leaving the `with` block) removes the worker's entry: a clean exit
is visible at once instead of after `worker_ttl_ms`.

The first beat that reaches Redis also checks, once, that this Redis is safe for queues
(shared/redis_checks.py: no eviction, something on disk) and warns loudly if not: every
worker process says so in its own log, whenever Redis first becomes reachable.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from types import TracebackType

import redis

from shared.heartbeat import add_heartbeat, remove_heartbeat
from shared.messages import now_ms
from shared.redis_checks import check_redis

log = logging.getLogger(__name__)


class Heartbeat:
    def __init__(
        self,
        client: redis.Redis,
        worker_id: str,
        kind: str,
        streams: list[str],
        interval_ms: int,
        ttl_ms: int,
        clock_ms: Callable[[], int] = now_ms,
    ) -> None:
        self.client = client
        self.worker_id = worker_id
        self.kind = kind
        self.streams = list(streams)
        self.interval_ms = interval_ms
        self.ttl_ms = ttl_ms
        self.clock_ms = clock_ms
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False
        self._checked = False  # this Redis's configuration checked (shared/redis_checks.py)

    def beat(self) -> bool:
        """Write one heartbeat; True if it reached Redis."""
        try:
            pipe = self.client.pipeline(transaction=False)
            add_heartbeat(pipe, self.worker_id, self.kind, self.streams, self.clock_ms(), self.ttl_ms)
            pipe.execute()
        except redis.RedisError as exc:
            if not self._failing:
                log.warning("worker=%s heartbeat failed: %s", self.worker_id, exc)
            self._failing = True
            return False
        if self._failing:
            log.info("worker=%s heartbeat restored", self.worker_id)
        self._failing = False
        if not self._checked:
            try:
                check_redis(self.client, log, f"(seen by {self.kind} worker {self.worker_id})")
                self._checked = True
            except redis.RedisError as exc:  # checked again at the next beat
                log.debug("worker=%s could not check redis yet: %s", self.worker_id, exc)
        return True

    def start(self) -> Heartbeat:
        self.beat()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{self.kind}", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_ms / 1000):
            self.beat()

    def stop(self) -> None:
        """Stop beating and remove this worker's entry (best effort)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            pipe = self.client.pipeline(transaction=False)
            remove_heartbeat(pipe, self.worker_id)
            pipe.execute()
        except redis.RedisError as exc:
            log.warning("worker=%s could not remove its heartbeat: %s", self.worker_id, exc)

    def __enter__(self) -> Heartbeat:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
