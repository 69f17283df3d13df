"""What a worker observes for GET /metrics, kept in this process until its next write.

A worker holds one StageMetrics; its loop calls `waited()` with the entries it starts on,
runs each stage through `timed()` (preprocess) or reports a forward pass with `forward()`
(model), and passes `take()` to the Store.complete it makes anyway, so the increments ride
in that round trip (shared/metrics.py). Nothing here talks to Redis, and nothing imports
torch (the preprocess processes use it too).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from shared import metrics
from shared.messages import now_ms
from workers.store import Entry, StageResult


def entry_ms(entry_id: str) -> int:
    """When Redis added a stream entry: the milliseconds part of its id."""
    return int(entry_id.partition("-")[0])


class StageMetrics:
    def __init__(
        self, wall_ms: Callable[[], int] = now_ms, timer: Callable[[], float] = time.perf_counter
    ) -> None:
        self.tally = metrics.Tally()
        self.wall_ms = wall_ms
        self.timer = timer

    def waited(self, entries: Sequence[Entry]) -> None:
        """Queue wait of entries a worker starts on now: now - when each entered its stream.
        Clocks of other machines may run behind Redis's: a negative wait counts as 0."""
        now = self.wall_ms()
        for entry in entries:
            item = entry.item
            wait_s = max(0, now - entry_ms(entry.entry_id)) / 1000
            self.tally.observe(metrics.QUEUE_WAIT, (item.pipeline, item.stage), wait_s)

    def timed(
        self, run: Callable[[Entry, Any], StageResult], entry: Entry, values: Any, stage: str | None = None
    ) -> StageResult:
        """`run(entry, values)`, its time counted as the item's time in its stage (or in `stage`:
        a postprocess stage the model worker runs on the entry's row)."""
        started = self.timer()
        result = run(entry, values)
        item = entry.item
        self.tally.observe(
            metrics.STAGE_SECONDS, (item.pipeline, stage or item.stage), self.timer() - started
        )
        return result

    def forward(self, model: str, results: Sequence[StageResult], seconds: float) -> None:
        """A forward pass of `model` over len(results) items that took `seconds`: the batch
        size, and each item's share of the time in its own pipeline's stage."""
        if not results:
            return
        self.tally.observe(metrics.BATCH_SIZE, (model,), len(results))
        share = seconds / len(results)
        stages = Counter((r.entry.item.pipeline, r.entry.item.stage) for r in results)
        for labels, n in stages.items():
            self.tally.observe(metrics.STAGE_SECONDS, labels, share, n)

    def take(self) -> dict[str, dict[str, int | float]]:
        return self.tally.take()
