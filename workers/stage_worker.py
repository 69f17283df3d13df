"""What every stream consumer shares: one consumer group over its streams, the reclaimer that
takes back entries of dead consumers (and trims the streams), the heartbeat, the run loop that
recovers from errors, and the warm shutdown.

Each kind is a StageWorker with its own `run_once()` step (tests drive it one at a time), its
`setup()` (the groups) and the hooks it needs; `run(stop)` is the same life around them:

- per item: PreprocessWorker (workers/preprocess.py), one CPU stage function per entry;
- batched: ModelWorker (workers/model_worker.py), a batch per model, its steps overlapped
  (its `loop`);
- deliveries: Notifier (workers/notifier.py), job events into webhook deliveries; its
  heartbeat is its process's (the rq threads beside it live as long), so it has none here.

The life:

1. the heartbeat starts (workers/heartbeat.py: the API's readiness and the reclaimers of other
   workers see this consumer alive);
2. `loop(stop)` calls `run_once()` until `stop` (runtime.run_loop: `recover()` first and after
   any error: the groups made again, this consumer's own unfinished entries taken back);
3. `finish()` runs what was read but not yet run (warm shutdown: nothing stays pending);
4. the heartbeat stops, and the consumer leaves its groups where it holds nothing pending.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import ClassVar

import redis

from shared import keys
from shared.settings import Settings
from workers import runtime
from workers.heartbeat import Heartbeat
from workers.reclaim import Reclaimer

log = logging.getLogger(__name__)


class StageWorker:
    kind: ClassVar[str]  # the heartbeat's kind: "preprocess", "model" or "notifier"
    group: ClassVar[str]  # its consumer group: keys.CPU_GROUP, keys.MODEL_GROUP or keys.NOTIFIER_GROUP

    def __init__(
        self,
        client: redis.Redis,
        settings: Settings,
        consumer: str,
        streams: list[str],
        clock: Callable[[], float] = time.monotonic,
        *,
        stream_keys: list[str] | None = None,
    ) -> None:
        """`streams`: every stage stream this worker reads, by name (each stage's, of every
        priority), which its heartbeat lists; `stream_keys`: the keys it reads, if not theirs."""
        self.redis = client
        self.settings = settings
        self.consumer = consumer
        self.all_streams = list(streams)
        self.stream_keys = stream_keys if stream_keys is not None else [keys.stream(s) for s in streams]
        self.reclaimer = Reclaimer(
            client,
            self.group,
            consumer,
            self.stream_keys,
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
        """Make the consumer group on each stream (from its start, so nothing queued is missed)."""
        raise NotImplementedError

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
        return f"{len(self.stream_keys)} streams"

    def heartbeat(self) -> Heartbeat | None:
        """This consumer's heartbeat while it runs (None: its process keeps one of its own)."""
        return Heartbeat(
            self.redis,
            self.consumer,
            self.kind,
            self.all_streams,
            self.settings.heartbeat_interval_ms,
            self.settings.worker_ttl_ms,
        )

    def stopped(self) -> None:
        """After the last step (counters logged one last time, say)."""

    # -- the process's life -----------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        with self.heartbeat() or contextlib.nullcontext():
            log.info("%s consumer=%s serving %s", self.kind, self.consumer, self.serving())
            self.loop(stop)
            try:
                self.finish()
            except Exception:
                log.exception(
                    "consumer=%s could not finish its entries in hand; they stay pending", self.consumer
                )
        self.stopped()
        runtime.retire_consumer(self.redis, self.group, self.consumer, self.stream_keys)
        log.info("%s consumer=%s stopped", self.kind, self.consumer)
