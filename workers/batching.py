"""Filling a batch from a stream: a pure loop over a reader and a clock.

`XREADGROUP ... COUNT n BLOCK ms` returns as soon as one entry exists, so one read rarely
fills a batch under light load. `collect_batch` keeps reading until the batch is full or
the batch's delay budget, counted from the moment its first entry arrived, is spent.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

Reader = Callable[[int, int], list[T]]  # (count, block_ms) -> up to `count` entries, maybe none


def remaining_block_ms(deadline_s: float, now_s: float) -> int:
    """Milliseconds left until `deadline_s`, rounded up and never below 1 (BLOCK 0 means forever)."""
    return max(1, math.ceil(round((deadline_s - now_s) * 1000, 6)))  # round: float noise is not 1 ms


def collect_batch(
    read: Reader[T],
    clock: Callable[[], float],
    max_batch_size: int,
    max_batch_delay_ms: float,
    first_block_ms: int,
) -> list[T]:
    """Read up to `max_batch_size` entries.

    The first read waits up to `first_block_ms` for at least one entry; an empty answer
    means an empty batch. Then reads continue (asking only for the room left, blocking
    only for the time left) until the batch is full or `max_batch_delay_ms` has passed
    since the first entry arrived. `clock` returns seconds (time.monotonic). With a zero
    delay the batch is whatever the first read returned. The reader must honour `count`:
    every entry it returns is the caller's to process (stream entries are pending once read).
    """
    if max_batch_size < 1:
        raise ValueError("max_batch_size must be at least 1")
    batch = list(read(max_batch_size, max(1, first_block_ms)))
    if not batch:
        return batch
    deadline = clock() + max_batch_delay_ms / 1000
    while len(batch) < max_batch_size:
        now = clock()
        if now >= deadline:
            break
        batch.extend(read(max_batch_size - len(batch), remaining_block_ms(deadline, now)))
    return batch
