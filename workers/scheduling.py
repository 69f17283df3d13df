"""Which model the model worker runs next, how many of its entries, and when to decide: a pure
policy over the model queues (entries held, their age), each model's batch-cost curve and when
the device will be free. No Redis, no threads of its own, no torch: tests drive it with numbers.

Why: with a fixed cost per forward pass (a GPU at small batches: kernel launches, the weights
read once per batch), a device can be 99% busy and still do only 70% of what it does at full
batches. Busy is not well used. So:

- **Pick by expected device efficiency.** A batch of n items of a model costs a + b*n device-ms
  (CostCurve: fitted online from the forward passes the worker times, per model). Every queued
  item must be served anyway, so what a batch wastes is its shortfall against the model's
  full-batch efficiency: the pick is the batch whose items per device-ms come closest to what its
  model does at max_batch_size (the fullest, on a fixed-cost curve; any, on a flat one), then the
  one with more items per device-ms, then the oldest.
- **An age bound.** A queue whose oldest entry has waited `max_age_s` goes first (the oldest of
  those): no model starves behind a busier one.
- **Priorities.** Short of the age bound, a queue holding higher-priority entries (ModelQueue.rank)
  goes before the others, then efficiency decides; within a model's batch the priorities share
  the slots (shared/priority.py, workers/model_queues.py).
- **Let the next batch fill while the device is busy anyway.** Decide only when the device is
  about to be free (its running and committed batches' predicted cost, less the time a batch
  takes to prepare), unless waiting cannot make any batch better (all full, or flat curves);
  only where the worker owns the device (`fill_while_busy`: not for CPU replicas sharing the
  streams, where what one holds back an idle one may lack).
- **Never hold a batch back while the device is idle** (beyond the model's own
  max_batch_delay_ms, which the caller applies as it always has).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

EMA_ALPHA = 0.2  # weight of a new forward pass in its batch size's mean cost
WEIGHT_CAP = 20  # a batch size seen this often counts no more in the fit than one seen 20 times
FLAT_WITHIN = 0.05  # a batch within 5% of its model's full-batch efficiency gains nothing by waiting


class CostCurve:
    """One model's forward cost, ms = a + b*n, fitted online.

    It keeps a running mean cost per batch size (an exponential moving average, so it follows a
    device that changes), and fits the line through them by least squares, each size weighted by
    how often it was seen (capped). Sizes seen long ago keep what they taught (a steady stream of
    full batches does not erase the fixed cost learnt from small ones), and each new pass of a size
    moves that size's mean. With one size only, the cost is taken as proportional (a = 0): no
    reason to wait for fuller batches until the data shows one. a and b are never negative.
    Thread-safe: the model thread adds, the feeder reads.
    """

    def __init__(self, alpha: float = EMA_ALPHA, weight_cap: int = WEIGHT_CAP) -> None:
        self.alpha = alpha
        self.weight_cap = weight_cap
        self._mean: dict[int, float] = {}
        self._count: dict[int, int] = {}
        self._fit: tuple[float, float] | None = None
        self._lock = threading.Lock()

    def add(self, n: int, ms: float) -> None:
        if n < 1 or ms < 0:
            raise ValueError(f"a forward pass has n >= 1 items and a cost >= 0, got n={n}, ms={ms}")
        with self._lock:
            old = self._mean.get(n)
            self._mean[n] = ms if old is None else old + self.alpha * (ms - old)
            self._count[n] = self._count.get(n, 0) + 1
            self._fit = None

    @property
    def samples(self) -> int:
        with self._lock:
            return sum(self._count.values())

    def fit(self) -> tuple[float, float] | None:
        """(a, b) in ms and ms per item; None before the first forward pass."""
        with self._lock:
            if self._fit is None and self._mean:
                self._fit = _fit_line(
                    [(n, y, min(self._count[n], self.weight_cap)) for n, y in self._mean.items()]
                )
            return self._fit

    def cost_ms(self, n: int) -> float | None:
        fit = self.fit()
        return None if fit is None else fit[0] + fit[1] * n

    def efficiency(self, n: int) -> float | None:
        """Items per device-ms at a batch of n (None: no data yet)."""
        cost = self.cost_ms(n)
        if cost is None:
            return None
        return float("inf") if cost <= 0 else n / cost


def _fit_line(points: list[tuple[int, float, int]]) -> tuple[float, float]:
    """Weighted least squares of y = a + b*n over (n, y, weight), with a, b >= 0."""
    w = sum(p[2] for p in points)
    mn = sum(p[2] * p[0] for p in points) / w
    my = sum(p[2] * p[1] for p in points) / w
    sxx = sum(p[2] * (p[0] - mn) ** 2 for p in points)
    if sxx <= 0:  # one batch size: proportional
        return 0.0, my / mn
    b = sum(p[2] * (p[0] - mn) * (p[1] - my) for p in points) / sxx
    a = my - b * mn
    if b < 0:  # costs fall with n (noise, caches): a constant cost
        return my, 0.0
    if a < 0:  # through the origin instead
        return 0.0, sum(p[2] * p[0] * p[1] for p in points) / sum(p[2] * p[0] ** 2 for p in points)
    return a, b


@dataclass(frozen=True)
class ModelQueue:
    """What the worker holds for one model: entries read, not yet batched."""

    name: str
    waiting: int
    oldest_age_s: float  # since its oldest entry entered its stream
    max_batch: int
    arrived: tuple[int, int] = (0, 0)  # the oldest entry's stream id (ms, seq): ties go to the first
    rank: int = 1  # the highest priority held (shared/priority.py: 0 high, 1 normal, 2 low)


class Scheduler:
    """The policy (see the module's docstring) over the models' curves."""

    def __init__(
        self,
        curves: Mapping[str, CostCurve],
        max_age_s: float,
        flat_within: float = FLAT_WITHIN,
        fill_while_busy: bool = True,
    ) -> None:
        self.curves = curves
        self.max_age_s = max_age_s
        self.flat_within = flat_within
        # Off where this worker is one of several sharing the streams (CPU replicas, each its own
        # "device"): entries it holds for a fuller batch could be what an idle replica lacks.
        self.fill_while_busy = fill_while_busy

    def relative_efficiency(self, q: ModelQueue) -> float | None:
        """The batch it could run now, against a full batch: 1.0 = nothing to gain by waiting."""
        curve = self.curves.get(q.name)
        n = min(q.waiting, q.max_batch)
        now = curve.efficiency(n) if curve else None
        best = curve.efficiency(q.max_batch) if curve else None
        if now is None or best is None:
            return None
        if best == float("inf"):
            return 1.0
        return now / best if best > 0 else 1.0

    def can_improve(self, q: ModelQueue) -> bool:
        """Would more entries make this model's batch worth more? (Unknown curve: no.)"""
        if q.waiting >= q.max_batch:
            return False
        rel = self.relative_efficiency(q)
        return rel is not None and rel < 1.0 - self.flat_within

    def pick(self, queues: Sequence[ModelQueue]) -> ModelQueue | None:
        """The queue to run now (None: nothing waits)."""
        work = [q for q in queues if q.waiting > 0]
        if not work:
            return None
        overdue = [q for q in work if q.oldest_age_s >= self.max_age_s]
        if overdue:
            return max(overdue, key=lambda q: (q.oldest_age_s, -q.arrived[0], -q.arrived[1]))

        def score(q: ModelQueue) -> tuple[float, ...]:
            rel = self.relative_efficiency(q)
            curve = self.curves.get(q.name)
            eff = curve.efficiency(min(q.waiting, q.max_batch)) if curve else None
            # Higher-priority entries held go first; among equals, efficiency decides. A model
            # never run yet goes first: its curve is learnt by running it.
            return (
                -q.rank,
                float("inf") if rel is None else rel,
                float("inf") if eff is None else eff,
                q.oldest_age_s,
                -q.arrived[0],
                -q.arrived[1],
            )

        return max(work, key=score)

    def fill_for_s(
        self, queues: Sequence[ModelQueue], busy_for_s: float, lead_s: float, overtakable: bool = False
    ) -> float:
        """How much longer to let batches fill before deciding: 0 = decide now. Waiting only
        happens while the device is busy, ends `lead_s` (the time a batch takes to prepare)
        before it is free, and not at all when no batch could get better by it. `overtakable`:
        what is held could be overtaken by a higher priority arriving meanwhile (priorities are
        in use, and not all of it is high), which makes even full batches better for waiting: a
        batch decided early would keep a high item that comes behind it waiting a batch more."""
        if busy_for_s <= lead_s or not self.fill_while_busy:
            return 0.0
        work = [q for q in queues if q.waiting > 0]
        if work and not overtakable and not any(self.can_improve(q) for q in work):
            return 0.0
        return busy_for_s - lead_s

    @staticmethod
    def take(q: ModelQueue) -> int:
        return min(q.waiting, q.max_batch)


LATE_TARGET_S = 0.0005  # how late a planned batch may start after the last one ended
MARGIN_GAIN = 0.25  # how much of each miss the lead margin takes in
MAX_MARGIN_S = 0.05


class DeviceClock:
    """When the device will be free: the batch it runs now (since when), the batches committed
    to it (handed to the model thread, not started), and each model's curve to predict them.

    The feeder commits a batch when it hands it over (`planned`: chosen while the device was
    busy, to follow the running batch at once); the model thread calls `begin` and `end` around
    the forward pass, and `end` adds the pass to its model's curve.

    `margin_s` is how much earlier than the prediction the feeder should decide, on top of the
    time a batch takes to prepare: each planned batch that starts more than LATE_TARGET_S after
    the device's last end (the feeder was descheduled, the prepare ran long) raises it by a share
    of the miss, each that starts on time lowers it (an integral control, within 0..50 ms), so
    the device does not idle between batches and batches still fill until the last moment.
    Thread-safe.
    """

    def __init__(self, curves: Mapping[str, CostCurve], clock: Callable[[], float] = time.monotonic) -> None:
        self.curves = curves
        self.clock = clock
        self.margin_s = 0.0
        self._running: tuple[str, int, float] | None = None  # model, n, started
        self._committed: deque[tuple[str, int, bool]] = deque()  # model, n, planned
        self._last_end: float | None = None
        self._lock = threading.Lock()

    def commit(self, model: str, n: int, planned: bool = False) -> None:
        with self._lock:
            self._committed.append((model, n, planned))

    def begin(self, model: str, n: int) -> None:
        with self._lock:
            now = self.clock()
            match = next((c for c in self._committed if c[:2] == (model, n)), None)
            if match is not None:
                self._committed.remove(match)
                if match[2] and self._last_end is not None:
                    late = now - self._last_end
                    self.margin_s += MARGIN_GAIN * (late - LATE_TARGET_S)
                    self.margin_s = min(max(self.margin_s, 0.0), MAX_MARGIN_S)
            self._running = (model, n, now)

    def end(self, seconds: float | None) -> None:
        """The running batch ended after `seconds` (None: it failed; its time is not a cost)."""
        with self._lock:
            running, self._running = self._running, None
            self._last_end = self.clock()
        if running is not None and seconds is not None:
            self.curves[running[0]].add(running[1], seconds * 1000.0)

    def reset(self) -> None:
        """Forget what was running and committed (a session that failed dropped them)."""
        with self._lock:
            self._running = None
            self._committed.clear()
            self._last_end = None

    def idle(self) -> bool:
        """Nothing running, nothing committed: a batch chosen now starts at once."""
        with self._lock:
            return self._running is None and not self._committed

    def busy_for_s(self) -> float:
        """Predicted seconds until the device has nothing to run (0 when idle). A batch running
        past its prediction (or of a model with no curve yet) counts as about to end: 0 left."""
        with self._lock:
            running, committed = self._running, list(self._committed)
        total = 0.0
        if running is not None:
            model, n, started = running
            cost = self.curves[model].cost_ms(n)
            total += 0.0 if cost is None else max(started + cost / 1000.0 - self.clock(), 0.0)
        for model, n, _ in committed:
            cost = self.curves[model].cost_ms(n)
            total += 0.0 if cost is None else cost / 1000.0
        return total
