"""The `wait` preference of a `Prefer` header (RFC 7240), as the submit route reads it."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from services.api.waiters import JobWaiters, parse_prefer_wait
from shared.messages import JobStatus, JobView


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("wait=10", 10.0),
        ("WAIT = 2.5", 2.5),
        ("respond-async, wait=5", 5.0),
        ('wait="7"', 7.0),
        ("wait=5; foo=bar", 5.0),
        ("return=minimal", None),
        ("wait=soon", None),
        ("wait=-1", None),
        ("wait=nan", None),
        ("wait=inf", None),
        ("wait=0", 0.0),
        ("wait=600", 60.0),  # cut to the limit
    ],
)
def test_prefer_wait(header: str | None, expected: float | None) -> None:
    assert parse_prefer_wait(header, max_wait_s=60.0) == expected


class FakeEvents:
    """The events stream as JobWaiters reads it: XREVRANGE for its end, XREAD that blocks until
    an entry is added."""

    def __init__(self) -> None:
        self.entries: list[tuple[bytes, dict[bytes, bytes]]] = []
        self.added = asyncio.Event()

    def add(self, job_id: str) -> None:
        fields = {b"job": job_id.encode(), b"type": b"job.completed"}
        self.entries.append((f"{len(self.entries) + 1}-0".encode(), fields))
        self.added.set()

    async def xrevrange(self, key: str, count: int) -> list:
        return self.entries[-1:]

    async def xread(self, streams: dict, count: int, block: int) -> list:
        (last,) = streams.values()
        after = int(str(last).split("-")[0])
        while True:
            new = self.entries[after:]
            if new:
                return [(b"events", new)]
            self.added.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.added.wait(), block / 1000)
            if not self.entries[after:]:
                return []


def _view(status: JobStatus) -> JobView:
    return JobView.model_validate(
        {
            "id": "j1",
            "pipeline": "p",
            "status": status.value,
            "progress": {"done": 0, "total": 1},
            "created_at": "2026-11-25T00:00:00Z",
            "outputs": [],
        }
    )


@pytest.mark.anyio
async def test_an_end_between_the_write_and_the_wait_wakes_the_watch_at_once() -> None:
    """Prefer: wait watches before the job is written; a job that ends before the request starts
    waiting is answered at once, not after a recheck."""
    events = FakeEvents()
    waiters = JobWaiters(events, block_ms=1000, recheck_s=30.0)  # type: ignore[arg-type]
    reads: list[JobStatus] = []

    async def read() -> JobView:
        reads.append(JobStatus.succeeded)
        return _view(JobStatus.succeeded)

    try:
        async with waiters.watching("j1") as watch:
            events.add("j1")  # the job ends right after its write, before the wait begins
            started = time.monotonic()
            final = await watch.until_final(30.0, read, current=_view(JobStatus.queued))
        assert final.status is JobStatus.succeeded and len(reads) == 1
        assert time.monotonic() - started < 5  # woken by the event, not by the 30 s recheck
        assert waiters.waiting == 0
    finally:
        await waiters.stop()
