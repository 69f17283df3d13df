"""What every stage worker shares: one consumer group over its streams, the reclaimer that takes
back entries of dead consumers (and trims the streams), the heartbeat, the run loop that
recovers from errors, and the warm shutdown.

A worker kind (PreprocessWorker: one CPU stage per entry; ModelWorker: batches per model) is a
StageWorker with its own `run_once()` step, which tests drive one at a time; `run(stop)` is the
process's life around it:

1. the heartbeat starts (workers/heartbeat.py: the API's readiness and the reclaimers of other
   workers see this consumer alive);
2. `loop(stop)` calls `run_once()` until `stop` (runtime.run_loop: `recover()` first and after
   any error: the groups made again, this consumer's own unfinished entries taken back);
3. `finish()` runs what was read but not yet run (warm shutdown: nothing stays pending);
4. the heartbeat stops, and the consumer leaves its groups where it holds nothing pending.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import ClassVar

from shared import keys
from shared.settings import Settings
from workers import runtime
from workers.heartbeat import Heartbeat
from workers.reclaim import Reclaimer
from workers.store import Store

log = logging.getLogger(__name__)


class StageWorker:
    kind: ClassVar[str]  # the heartbeat's kind: "preprocess" or "model"
    group: ClassVar[str]  # the consumer group it reads with (keys.CPU_GROUP, keys.MODEL_GROUP)

    def __init__(
        self,
        store: Store,
        settings: Settings,
        consumer: str,
        streams: list[str],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`streams`: every stream this worker reads (each stage's, of every priority)."""
        self.store = store
        self.settings = settings
        self.consumer = consumer
        self.all_streams = list(streams)
        self.reclaimer = Reclaimer(
            store.redis,
            self.group,
            consumer,
            [keys.stream(s) for s in self.all_streams],
            settings.lease_ms,
            settings.max_deliveries,
            clock,
            trim_interval_s=settings.stream_trim_interval_s,
        )

    # -- the step and its hooks ---------------------------------------------------------

    def run_once(self, block_ms: int | None = None) -> int:
        """One step; returns the entries handled."""
        raise NotImplementedError

    def setup(self) -> None:
        self.store.ensure_groups(self.all_streams, self.group)

    def recover(self) -> None:
        """Make the groups, and queue what this consumer read but did not finish to be taken back."""
        self.setup()
        self.reclaimer.adopt_own()

    def loop(self, stop: threading.Event) -> None:
        """Steps until `stop`; the step in hand always finishes and is acknowledged."""
        runtime.run_loop(f"{self.kind} {self.consumer}", self.run_once, stop, recover=self.recover)

    def finish(self) -> None:
        """Warm shutdown: run what was read but not run yet (nothing, for a worker that holds none)."""

    def serving(self) -> str:
        """What this worker serves, for the log line at its start."""
        return f"{len(self.all_streams)} streams"

    def stopped(self) -> None:
        """After the last step (counters logged one last time, say)."""

    # -- the process's life -----------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        heartbeat = Heartbeat(
            self.store.redis,
            self.consumer,
            self.kind,
            self.all_streams,
            self.settings.heartbeat_interval_ms,
            self.settings.worker_ttl_ms,
        )
        with heartbeat:
            log.info("%s consumer=%s serving %s", self.kind, self.consumer, self.serving())
            self.loop(stop)
            try:
                self.finish()
            except Exception:
                log.exception(
                    "consumer=%s could not finish its entries in hand; they stay pending", self.consumer
                )
        self.stopped()
        runtime.retire_consumer(
            self.store.redis, self.group, self.consumer, [keys.stream(s) for s in self.all_streams]
        )
        log.info("%s consumer=%s stopped", self.kind, self.consumer)
