"""How fast each pipeline's backlog drains, and the Retry-After that gives a refused (429) job.

The workers add 1 to keys.drained(pipeline) as each item finishes (COMPLETE_STAGE, beside the
backlog counter's -1). The API's deadline sweep (services/api/sweep.py) samples it every tick;
the drain rate is the counter's growth over about the last WINDOW_S seconds. A 429's
Retry-After is how long the pipeline needs, at that rate, to finish the items that stand
between its backlog and the cap: ceil((backlog - cap + 1) / rate) seconds, clamped to
[MIN_S, MAX_S]. While the rate is unknown (the API has sampled for less than MIN_SPAN_S):
DEFAULT_S. While nothing drains (no workers, a stuck stage): MAX_S.

The byte budget (DLPIPE_MAX_BACKLOG_BYTES) works the same way in bytes: the sweep samples the
bytes given back by ended jobs (keys.BYTES `freed`) under the name BYTES, and a refusal for
bytes waits for the bytes between what the jobs hold and the budget.
"""

from __future__ import annotations

import math
from collections import deque

from shared import keys

WINDOW_S = 30.0  # the rate is measured over about this much of the recent past
MIN_SPAN_S = 2.0  # fewer seconds of samples than this: the rate is unknown
MIN_S = 1  # Retry-After never says less (HTTP's unit is the second)
DEFAULT_S = 5  # ... when the rate is not known yet
MAX_S = 60  # ... never more: the drain may speed up (workers added, a stage unstuck)
BYTES = keys.BYTES  # the name the byte budget's samples go by (no pipeline name holds a ':')


class DrainRates:
    """Samples of each pipeline's drained counter, and the rate they show (items per second)."""

    def __init__(self, window_s: float = WINDOW_S) -> None:
        self.window_s = window_s
        self._samples: dict[str, deque[tuple[float, int]]] = {}

    def observe(self, pipeline: str, at_s: float, drained: int) -> None:
        """The pipeline's counter read `drained` at `at_s` (a monotonic clock)."""
        samples = self._samples.setdefault(pipeline, deque())
        if samples and drained < samples[-1][1]:
            samples.clear()  # the counter went back (Redis lost it): start over
        samples.append((at_s, drained))
        while len(samples) > 2 and at_s - samples[1][0] >= self.window_s:
            samples.popleft()

    def rate(self, pipeline: str) -> float | None:
        """Items finished per second over the window; None while it spans less than MIN_SPAN_S."""
        samples = self._samples.get(pipeline)
        if not samples or samples[-1][0] - samples[0][0] < MIN_SPAN_S:
            return None
        (t0, n0), (t1, n1) = samples[0], samples[-1]
        return (n1 - n0) / (t1 - t0)


def retry_after_s(backlog: int, cap: int, rate: float | None) -> int:
    """Seconds until a pipeline with `backlog` items (at or over `cap`) admits a job again, at
    `rate` items per second (None: unknown), clamped to [MIN_S, MAX_S]."""
    if rate is None:
        return DEFAULT_S
    if rate <= 0:
        return MAX_S
    return int(min(MAX_S, max(MIN_S, math.ceil((backlog - cap + 1) / rate))))
