"""Following jobs' event streams for `GET /v1/jobs/{id}/events`: one reader per API process.

The workers' scripts write each job's events to its own stream (keys.job_events: `o` as an item
finishes, `c` as the job ends). One task per API process reads the streams of every job some
client follows, with one blocking XREAD over all of them, fetches the finished items' outputs in
one pipelined round trip, and hands each subscriber its job's updates. A client costs a queue,
not a Redis connection: a thousand clients on a thousand jobs are one XREAD.

A subscriber registers first, then reads its snapshot (services/api/sse.py), then says where the
snapshot ended (`start_from`): the reader goes on from there for a job it did not follow yet, and
whatever else reaches the queue the subscriber had already is told apart by the stream ids. The
task starts with the first subscriber; while no job is followed it waits on an asyncio event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared import codecs, keys

log = logging.getLogger(__name__)

BLOCK_MS = 200  # a job followed anew waits at most this for the reader's next XREAD to include it
READ_COUNT = 256  # entries per stream per XREAD
RETRY_DELAY_S = 0.5


def entry_key(entry_id: str) -> tuple[int, int]:
    """A stream id as numbers, to compare ids."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass(frozen=True)
class Update:
    """One entry of a job's event stream: an item finished (`output`: its stored output JSON, or
    None if it is gone already), or the job ended (`status`)."""

    id: str
    index: int | None = None
    done: int | None = None
    output: bytes | None = None
    status: str | None = None

    @property
    def ended(self) -> bool:
        return self.status is not None


def parse_entry(entry_id: Any, fields: dict[Any, Any], output: bytes | None = None) -> Update | None:
    f = {codecs.text(k): codecs.text(v) for k, v in fields.items()}
    if f.get("t") == "c":
        return Update(codecs.text(entry_id), status=f.get("s", "?"))
    if f.get("t") == "o" and f.get("i", "").isdigit():
        return Update(codecs.text(entry_id), index=int(f["i"]), done=int(f.get("d") or 0), output=output)
    return None


class Subscription:
    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.queue: asyncio.Queue[list[Update]] = asyncio.Queue()


class JobEventHub:
    def __init__(self, client: Redis, *, block_ms: int = BLOCK_MS) -> None:
        self._client = client
        self._block_ms = block_ms
        self._subs: dict[str, set[Subscription]] = {}
        self._after: dict[str, str] = {}  # job -> the stream id the reader reads after
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.delivered = 0  # updates handed to subscribers (benchmarks)

    @property
    def followed(self) -> int:
        return len(self._after)

    @contextlib.asynccontextmanager
    async def subscribe(self, job_id: str) -> AsyncIterator[Subscription]:
        sub = Subscription(job_id)
        self._subs.setdefault(job_id, set()).add(sub)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._follow(), name="job-events")
        try:
            yield sub
        finally:
            subs = self._subs.get(job_id)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[job_id]
                    self._after.pop(job_id, None)

    def start_from(self, job_id: str, after_id: str) -> None:
        """A subscriber's snapshot ended at `after_id`: follow the job from there (unless followed)."""
        if job_id in self._subs and job_id not in self._after:
            self._after[job_id] = after_id
            self._changed.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _follow(self) -> None:
        while True:
            if not self._after:
                self._changed.clear()
                await self._changed.wait()
                continue
            streams = {keys.job_events(job): after for job, after in self._after.items()}
            try:
                reply = await self._client.xread(streams, count=READ_COUNT, block=self._block_ms)
                if reply:
                    await self._dispatch(reply)
            except (RedisError, OSError) as exc:
                log.warning("job events: cannot read the jobs' event streams (%s); retrying", exc)
                await asyncio.sleep(RETRY_DELAY_S)

    async def _dispatch(self, reply: list[Any]) -> None:
        """Fetch the outputs of the items the entries name (one round trip), then hand them out."""
        found: list[tuple[str, list[tuple[Any, dict[Any, Any]]]]] = []
        async with self._client.pipeline(transaction=False) as pipe:
            for stream, entries in reply:
                job = codecs.text(stream).removeprefix(keys.job("")).removesuffix(":events")
                found.append((job, entries))
                indices = [codecs.text(f.get(b"i", b"")) for _, f in entries if f.get(b"t") == b"o"]
                pipe.hmget(keys.job_outputs(job), indices or ["-"])
            outputs = await pipe.execute()
        for (job, entries), values in zip(found, outputs, strict=True):
            if job not in self._after:
                continue  # its last subscriber left meanwhile
            self._after[job] = codecs.text(entries[-1][0])
            values_left = iter(values)
            updates = []
            for entry_id, fields in entries:
                output = next(values_left, None) if fields.get(b"t") == b"o" else None
                update = parse_entry(entry_id, fields, output)
                if update is not None:
                    updates.append(update)
            for sub in self._subs.get(job, ()):
                sub.queue.put_nowait(updates)
                self.delivered += len(updates)
