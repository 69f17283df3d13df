"""The deadline sweep: every job ends by its deadline, whatever the workers do.

Each job is in its pipeline's deadlines set (keys.deadlines), scored by when it must have
ended: its deadline (`timeout_s`), else the end of its DLPIPE_JOB_TTL_S. Workers fail items
past the deadline when they reach them; with no workers, or a stage stuck or gone, nobody
would. So every DLPIPE_DEADLINE_SWEEP_INTERVAL_MS the sweep reads each pipeline's overdue jobs
and ends each one with EXPIRE_JOB (shared/redis/lua): its unfinished outputs fail as
`expired: ...`, the job ends, the backlog counter loses those items, one job.completed event,
all in one atomic script that does nothing for a job that has ended or left the set. Then the
inputs of the items that will never run are freed, as on cancel.

It runs in the API (the app's lifespan starts it): the API is the one process that runs
whenever jobs can exist at all (no job without it), while workers of some kind may be absent,
which is the very case to cover. Several API processes (replicas, uvicorn workers) sweep
side by side safely: the script ends a job at most once, whoever calls it.

A job whose record vanished while open (deleted or evicted, or kept past its TTL's grace
while no API ran) would leave its unfinished items in the backlog counter forever: when the
sweep meets one, it recounts that pipeline's backlog from its open jobs (RECOUNT_BACKLOG).

The byte budget (keys.BYTES, one for all pipelines) is kept the same way: the scripts that
end a job give its bytes back, and a vanished job's bytes are recounted from the open jobs of
every pipeline this API serves (RECOUNT_BYTES).

Each tick also samples each pipeline's drained counter (keys.drained), and the bytes given
back (keys.BYTES `freed`), for the 429's Retry-After (services/api/drain.py), in the same
round trip.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.api.drain import BYTES, DrainRates
from shared import codecs, job_index, keys
from shared.jobs import OPEN_JOB_GRACE_S, TTL_EXPIRED_REASON, drop_items, expired_reason
from shared.messages import now_ms
from shared.redis import admission as admission_scripts
from shared.redis import jobs as job_scripts

log = logging.getLogger(__name__)

BATCH = 200  # overdue jobs read per pipeline per round trip
MAX_BACKOFF_S = 30.0  # the longest wait between tries while Redis is away
INDEX_TRIM_S = 60.0  # how often the job index loses the members too old to exist (shared/job_index.py)


class Sweeper:
    """Ends the overdue jobs of some pipelines, and samples their drain rates."""

    def __init__(
        self,
        client: Redis,
        pipelines: Iterable[str],
        *,
        ttl_s: int,
        interval_s: float,
        rates: DrainRates,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.pipelines = sorted(pipelines)
        self.ttl_s = ttl_s
        self.interval_s = interval_s
        self.rates = rates
        self.clock = clock

    async def run(self, stop: asyncio.Event) -> None:
        """Sweep every interval until `stop` is set (a sweep in hand is finished first: it is not
        cancelled mid-way); Redis errors are waited out with a growing delay."""
        delay = self.interval_s
        trimmed_at = -INDEX_TRIM_S
        while not stop.is_set():
            try:
                await self.sweep_once()
                if self.clock() - trimmed_at >= INDEX_TRIM_S:
                    await self.trim_index()
                    trimmed_at = self.clock()
                delay = self.interval_s
            except (RedisError, OSError) as exc:  # /readyz reports Redis; catch up once it is back
                delay = min(max(delay, self.interval_s) * 2, MAX_BACKOFF_S)
                log.debug("deadline sweep: redis unavailable (%s); again in %.1fs", exc, delay)
            except Exception:
                log.exception("deadline sweep failed; again in %.1fs", delay)
            try:
                await asyncio.wait_for(stop.wait(), delay)
            except TimeoutError:
                pass

    async def trim_index(self) -> None:
        """Drop from every owner's job index the jobs created too long ago to exist still (the
        listing drops the others it meets whose record has expired)."""
        owners = sorted(codecs.text(o) for o in await self.client.smembers(job_index.OWNERS_KEY))
        before = job_index.oldest_possible_ms(now_ms(), self.ttl_s, OPEN_JOB_GRACE_S)
        async with self.client.pipeline(transaction=False) as pipe:
            job_index.trim_index(pipe, owners, self.pipelines, before)
            await pipe.execute()

    async def sweep_once(self) -> int:
        """One tick: sample the drained counters and end every overdue job; returns how many ended."""
        ended = 0
        while True:
            now = now_ms()
            async with self.client.pipeline(transaction=False) as pipe:
                for name in self.pipelines:
                    pipe.zrangebyscore(keys.deadlines(name), "-inf", now, start=0, num=BATCH)
                    pipe.get(keys.drained(name))
                pipe.hget(keys.BYTES, "freed")
                *replies, freed = await pipe.execute()
            at_s = self.clock()
            self.rates.observe(BYTES, at_s, int(freed or 0))
            overdue: list[tuple[str, str]] = []
            for name, ids, drained in zip(self.pipelines, replies[::2], replies[1::2], strict=True):
                self.rates.observe(name, at_s, int(drained or 0))
                overdue += [(name, codecs.text(job_id)) for job_id in ids]
            if overdue:
                ended += await self._end(overdue, now)
            if not any(len(ids) == BATCH for ids in replies[::2]):
                return ended

    async def _end(self, overdue: list[tuple[str, str]], now: int) -> int:
        """End these jobs (EXPIRE_JOB) in one round trip, free their items' inputs in another;
        recount the backlog of a pipeline where a job's record was gone, and the byte budget."""
        async with self.client.pipeline(transaction=False) as pipe:
            calls = [
                job_scripts.expire_job(
                    job_id=job_id,
                    pipeline=name,
                    now=now,
                    ttl_s=self.ttl_s,
                    timeout_reason=expired_reason("%s"),
                    ttl_reason=TTL_EXPIRED_REASON,
                )
                for name, job_id in overdue
            ]
            for call in calls:
                await call.queue_async(pipe)
            replies = [call.read(raw) for call, raw in zip(calls, await pipe.execute(), strict=True)]
        ended, recount = 0, set()
        async with self.client.pipeline(transaction=False) as pipe:
            for (name, job_id), reply in zip(overdue, replies, strict=True):
                if reply.outcome == job_scripts.Expired.ended:
                    ended += 1
                    drop_items(pipe, job_id, reply.total)
                    log.warning(
                        "job=%s stage=sweep ended past its deadline: %d of %d outputs expired",
                        job_id,
                        reply.failed,
                        reply.total,
                    )
                elif reply.outcome == job_scripts.Expired.gone:
                    recount.add(name)
                    log.error("job=%s stage=sweep its record vanished while it was open", job_id)
            await pipe.execute()
        for name in sorted(recount):
            counted = await admission_scripts.recount_backlog(pipeline=name).run_async(self.client)
            log.warning(
                "pipeline=%s backlog recounted from its open jobs: %s -> %s (%s gone dropped)",
                name,
                counted.before,
                counted.after,
                counted.dropped,
            )
        if recount:
            counted = await admission_scripts.recount_bytes(pipelines=self.pipelines).run_async(self.client)
            log.warning(
                "byte budget recounted from the open jobs: %s -> %s bytes", counted.before, counted.after
            )
        return ended
