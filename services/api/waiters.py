"""Requests that wait for their job to end: `GET /v1/jobs/{id}?wait_s=N` (a long poll) and
`POST .../jobs` with `Prefer: wait=N` (an answer with the final job when it ends in time).

One task per API process follows the events stream with a plain XREAD (no consumer group: it
takes nothing from the notifier) and wakes the requests waiting for the jobs whose
`job.completed` event passes (every final state emits one: succeeded, failed, canceled). A
waiting request registers first, then reads its job, so an end between the two still wakes it.
Nothing can hang on a missed event (the stream trimmed past the reader, Redis restarted without
its data): every waiter reads its job again at least every `recheck_s`, and the reader wakes
everyone after it loses Redis. The reader starts with the first waiter and runs until the app
stops; while no one waits it costs one blocking XREAD per `block_ms`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared import codecs, keys
from shared.messages import EventType, JobView

log = logging.getLogger(__name__)

READ_COUNT = 512
RETRY_DELAY_S = 0.5


def parse_prefer_wait(header: str | None, max_wait_s: float) -> float | None:
    """The `wait` preference of a `Prefer` header (RFC 7240), in seconds, capped at `max_wait_s`;
    None when there is none or it is not a number >= 0 (an unknown preference is ignored, as the
    RFC asks)."""
    if not header:
        return None
    for preference in header.split(","):
        token, _, value = preference.split(";", 1)[0].strip().partition("=")
        if token.strip().lower() != "wait":
            continue
        try:
            seconds = float(value.strip().strip('"'))
        except ValueError:
            return None
        if not seconds >= 0 or seconds == float("inf"):  # also NaN
            return None
        return min(seconds, max_wait_s)
    return None


class Watch:
    """One request waiting for one job (JobWaiters.watching)."""

    def __init__(self, waiters: JobWaiters, job_id: str, event: asyncio.Event, recheck_s: float) -> None:
        self._waiters = waiters
        self._job_id = job_id
        self._event = event
        self._recheck_s = recheck_s

    async def until_final(
        self, timeout_s: float, read: Callable[[], Awaitable[JobView]], current: JobView | None = None
    ) -> JobView:
        """`read()` the job until it is final or `timeout_s` has passed; the last view read.
        `current`: a view of the job taken since the watch began (the first read is skipped)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        view = current
        while True:
            if view is None:
                self._event.clear()
                view = await self._waiters.read_shared(self._job_id, read)
            left = deadline - loop.time()
            if view.status.is_final or left <= 0:
                return view
            # Read again when woken, or at the next recheck tick: the ticks are on the loop's clock,
            # the same for every waiter, so a thousand rechecks of one job are one shared read.
            tick = self._recheck_s - loop.time() % self._recheck_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event.wait(), min(left, tick))
            view = None


class JobWaiters:
    def __init__(self, client: Redis, *, block_ms: int = 1000, recheck_s: float = 2.0) -> None:
        self._client = client
        self._block_ms = block_ms
        self.recheck_s = recheck_s
        self._waiting: dict[str, set[asyncio.Event]] = {}
        self._positioned = asyncio.Event()  # the reader knows where the stream ends
        self._task: asyncio.Task[None] | None = None
        # Shared reads: job -> (when it started, the read in flight), on one clock with the wake-ups.
        self._reads: dict[str, tuple[int, asyncio.Future[JobView]]] = {}
        self._clock = 0
        self._woken: dict[str, int] = {}  # job -> when its waiters were last woken
        self._all_woken = 0  # when every waiter was last woken (after an outage)

    async def read_shared(self, job_id: str, read: Callable[[], Awaitable[JobView]]) -> JobView:
        """`read()` the job, or join a read of it already in flight that started after its waiters
        were last woken: when a job ends, its thousand waiters wake together and make one read
        between them, not a thousand (the pool of connections would be all theirs). A read that
        started before the wake-up may have missed the end it announced, so it is not joined; one
        that misses an end not yet seen is safe to share: that end's wake-up comes after it."""
        flight = self._reads.get(job_id)
        if flight is None or flight[0] < max(self._woken.get(job_id, 0), self._all_woken):
            self._clock += 1
            flight = (self._clock, asyncio.ensure_future(read()))
            self._reads[job_id] = flight
            flight[1].add_done_callback(lambda done: self._landed(job_id, done))
        return await asyncio.shield(flight[1])

    def _landed(self, job_id: str, done: asyncio.Future[JobView]) -> None:
        current = self._reads.get(job_id)
        if current is not None and current[1] is done:
            del self._reads[job_id]
        if not done.cancelled():
            done.exception()  # retrieved: every joiner that is still there got it already

    @property
    def waiting(self) -> int:
        return sum(len(events) for events in self._waiting.values())

    async def read_until_final(
        self, job_id: str, timeout_s: float, read: Callable[[], Awaitable[JobView]]
    ) -> JobView:
        """`read()` the job until it is final or `timeout_s` has passed; the last view read."""
        async with self.watching(job_id) as watch:
            return await watch.until_final(timeout_s, read)

    @contextlib.asynccontextmanager
    async def watching(self, job_id: str) -> AsyncIterator[Watch]:
        """Be woken by the end of `job_id` from now on (enter before the job is even written,
        and an end right after the write still wakes the watch)."""
        event = asyncio.Event()
        self._waiting.setdefault(job_id, set()).add(event)
        try:
            self._start()
            # Read only once the reader is past the events already in the stream: an end after
            # this is then an event it will see. Redis away: go on, the rechecks cover it.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._positioned.wait(), self.recheck_s)
            yield Watch(self, job_id, event, self.recheck_s)
        finally:
            events = self._waiting.get(job_id)
            if events is not None:
                events.discard(event)
                if not events:
                    del self._waiting[job_id]
                    self._woken.pop(job_id, None)

    def _start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._follow(), name="job-waiters")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _wake(self, job_id: str) -> None:
        events = self._waiting.get(job_id)
        if not events:
            return
        self._clock += 1
        self._woken[job_id] = self._clock
        for event in events:
            event.set()

    def _wake_all(self) -> None:
        self._clock += 1
        self._all_woken = self._clock
        for events in self._waiting.values():
            for event in events:
                event.set()

    async def _follow(self) -> None:
        last: str | None = None
        while True:
            try:
                if last is None:
                    newest = await self._client.xrevrange(keys.EVENTS, count=1)
                    last = codecs.text(newest[0][0]) if newest else "0-0"
                    self._positioned.set()
                    self._wake_all()  # (again) after an outage: whatever ended meanwhile is read now
                started = asyncio.get_running_loop().time()
                reply = await self._client.xread({keys.EVENTS: last}, count=READ_COUNT, block=self._block_ms)
                if not reply and asyncio.get_running_loop().time() - started < self._block_ms / 10000:
                    await asyncio.sleep(self._block_ms / 1000)  # a server that does not block: never spin
            except (RedisError, OSError) as exc:
                log.warning("job waiters: cannot follow the events stream (%s); retrying", exc)
                last = None
                self._positioned.clear()
                await asyncio.sleep(RETRY_DELAY_S)
                continue
            for _stream, entries in reply or []:
                for entry_id, fields in entries:
                    last = codecs.text(entry_id)
                    kind = fields.get(b"type", fields.get("type"))
                    if kind is not None and codecs.text(kind) == EventType.completed.value:
                        self._wake(codecs.text(fields.get(b"job", fields.get("job", b""))))
