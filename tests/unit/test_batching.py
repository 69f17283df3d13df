"""collect_batch with a scripted reader and a fake clock: no Redis, no sleeps."""

from __future__ import annotations

import pytest

from workers.batching import collect_batch, remaining_block_ms


class FakeStream:
    """Entries arrive at given times (seconds). read() returns what has arrived, or waits
    (advancing the fake clock) up to block_ms for the next arrival, like XREADGROUP."""

    def __init__(self, arrivals: list[float], now: float = 0.0) -> None:
        self.arrivals = sorted(arrivals)
        self.now = now
        self.next = 0
        self.calls: list[tuple[int, int]] = []

    def clock(self) -> float:
        return self.now

    def read(self, count: int, block_ms: int) -> list[int]:
        self.calls.append((count, block_ms))
        assert block_ms >= 1, "BLOCK 0 would block forever"
        if self.next >= len(self.arrivals) or self.arrivals[self.next] > self.now:
            upcoming = self.arrivals[self.next] if self.next < len(self.arrivals) else float("inf")
            deadline = self.now + block_ms / 1000
            if upcoming > deadline:
                self.now = deadline
                return []
            self.now = upcoming
        taken = []
        while self.next < len(self.arrivals) and self.arrivals[self.next] <= self.now and len(taken) < count:
            taken.append(self.next)
            self.next += 1
        return taken


def test_fills_to_max_size_across_several_reads() -> None:
    stream = FakeStream([0.000, 0.001, 0.002, 0.003, 0.004, 0.005])
    batch = collect_batch(
        stream.read, stream.clock, max_batch_size=4, max_batch_delay_ms=50, first_block_ms=1000
    )
    assert batch == [0, 1, 2, 3]
    assert len(stream.calls) == 4  # one entry per read: the loop is what fills the batch
    assert [count for count, _ in stream.calls] == [4, 3, 2, 1]  # asks only for the room left
    assert stream.next == 4  # nothing read beyond the batch


def test_takes_everything_already_waiting_in_one_read() -> None:
    stream = FakeStream([0.0] * 10)
    batch = collect_batch(
        stream.read, stream.clock, max_batch_size=8, max_batch_delay_ms=50, first_block_ms=1000
    )
    assert batch == list(range(8)) and len(stream.calls) == 1


def test_stops_when_the_delay_since_the_first_entry_has_passed() -> None:
    # Idle for 0.5 s, then entries every 4 ms; 10 ms budget from the first entry (t=0.5).
    stream = FakeStream([0.5 + 0.004 * i for i in range(10)])
    batch = collect_batch(
        stream.read, stream.clock, max_batch_size=8, max_batch_delay_ms=10, first_block_ms=1000
    )
    assert batch == [0, 1, 2]  # arrived at 0.500, 0.504, 0.508; the next (0.512) is too late
    assert stream.now == pytest.approx(0.510)
    first_count, first_block = stream.calls[0]
    assert (first_count, first_block) == (8, 1000)
    assert all(block <= 10 for _, block in stream.calls[1:])  # later reads block only for the time left


def test_an_idle_stream_gives_an_empty_batch_after_one_read() -> None:
    stream = FakeStream([])
    assert collect_batch(stream.read, stream.clock, 8, 10, first_block_ms=250) == []
    assert stream.calls == [(8, 250)]


def test_block_is_clamped_to_at_least_one_ms() -> None:
    # The clock moves 0.9999 ms per call: the remaining time rounds to a sub-millisecond
    # value that must become BLOCK 1, never BLOCK 0 (forever).
    t = [0.0]
    calls: list[tuple[int, int]] = []

    def clock() -> float:
        t[0] += 0.0009999
        return t[0]

    def read(count: int, block_ms: int) -> list[str]:
        calls.append((count, block_ms))
        return ["x"] if len(calls) == 1 else []

    assert collect_batch(read, clock, 8, 2, first_block_ms=0) == ["x"]
    assert calls[0] == (8, 1)  # a first block of 0 is clamped too
    assert len(calls) >= 2 and all(block >= 1 for _, block in calls)
    assert remaining_block_ms(1.0, 0.99999) == 1
    assert remaining_block_ms(1.0, 2.0) == 1
    assert remaining_block_ms(1.0, 0.9) == 100


def test_zero_delay_takes_what_one_read_gives() -> None:
    stream = FakeStream([0.0, 0.0, 0.001, 0.002])
    batch = collect_batch(
        stream.read, stream.clock, max_batch_size=8, max_batch_delay_ms=0, first_block_ms=1000
    )
    assert batch == [0, 1]
    assert len(stream.calls) == 1


def test_max_batch_size_one_reads_once() -> None:
    stream = FakeStream([0.0, 0.0, 0.0])
    assert collect_batch(stream.read, stream.clock, 1, 100, first_block_ms=1000) == [0]
    assert len(stream.calls) == 1


def test_rejects_a_batch_size_below_one() -> None:
    with pytest.raises(ValueError):
        collect_batch(lambda c, b: [], lambda: 0.0, 0, 10, 10)
