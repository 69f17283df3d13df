"""Waits between retries: one formula for every retry dlpipe makes itself.

The wait before retry `attempt` (0 for the first) is `base_s * 2**attempt`, capped at `cap_s`;
`jittered` spreads it over [delay/2, delay] so that clients retrying together do not come back
together. Used by the supervisors' restarts (shared/children.py), the workers' loops after an
error (workers/runtime.run_loop, the notifier's threads) and the Python client's retries
(dlpipe/_core.py). Redis connections retry with redis-py's own ExponentialWithJitterBackoff
(shared/redis_conn.py): its Retry object takes nothing else.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass


def exponential_s(attempt: int, base_s: float, cap_s: float) -> float:
    """`base_s` doubled `attempt` times, at most `cap_s` (attempt 0: `base_s`)."""
    return min(cap_s, base_s * 2 ** min(max(attempt, 0), 62))


def jittered(delay_s: float, rng: Callable[[], float] = random.random) -> float:
    """A wait drawn from [delay_s / 2, delay_s]."""
    return delay_s * (0.5 + rng() / 2)


@dataclass(frozen=True)
class Backoff:
    """Growing waits for a loop that retries until it succeeds: initial, doubled each time, capped."""

    initial_s: float = 0.2
    max_s: float = 10.0

    def delays(self) -> Callable[[], float]:
        """A fresh sequence of waits (take a new one after a success)."""
        attempt = 0

        def next_delay() -> float:
            nonlocal attempt
            delay = exponential_s(attempt, self.initial_s, self.max_s)
            attempt += 1
            return delay

        return next_delay
