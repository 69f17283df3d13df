"""Before a job is written: admission control (the pipeline's backlog) and `Idempotency-Key`.

Admission. Each pipeline's backlog is a counter in Redis (keys.backlog: items accepted and
not finished; +n in the job's own MULTI, -1 as each item finishes, the rest on cancel). A
new job first takes a grant (shared/redis/admission.py admit, one atomic check-and-reserve): refused (429,
`Retry-After`) while counter + open grants is at or over DLPIPE_MAX_BACKLOG, so a job
admitted just under the cap overshoots it by at most its own items. The job's MULTI adds
its items to the counter and drops the grant; a request that dies in between leaves a
grant that lapses by itself (GRANT_MS), never a counter that stays up. A refusal's
`Retry-After` comes from the pipeline's drain rate (services/api/drain.py).

Bytes. The same grant also holds a place in the byte budget, when one is given
(DLPIPE_MAX_BACKLOG_BYTES; keys.BYTES): the bytes of stored inputs (item inputs and job blobs,
as the job's MULTI writes them) of the jobs not ended, all pipelines together, since Redis's
memory is one pool. Counted per job: added in its MULTI, given back whole as it ends (finished,
canceled, expired), which holds a long job's inputs a little longer than Redis does (each
item's input is freed as the item finishes), the safe side, for one counter change per job
rather than per item. Refused (429) at or over the budget like the items; `Retry-After` from
the rate bytes are given back (the sweep samples keys.BYTES `freed`).

Idempotency. `Idempotency-Key: <key>` (1-255 printable ASCII characters) on a submit maps,
per caller (API key), to the request's fingerprint (pipeline + the request as parsed: other
whitespace, key order or multipart boundary make no other request) and the job. The first
request claims the key (SET NX, a pending record that
lapses after PENDING_S if the request dies) before the job is written, and the job's own
MULTI turns the claim into the final record (the job id and its 202 body, kept
DLPIPE_IDEMPOTENCY_TTL_S): so the job exists exactly when its record does. That MULTI runs
only while the key still holds this request's claim (WATCH, Claim.fence): a claim that
lapsed (its request slow, or its API process killed) and was taken by a retry can never
make a second job, so the lapse can be short, and a retry after a killed API waits seconds,
not a minute. A request with the same key and fingerprint replays that 202 (same id, same
body); one with another fingerprint gets 422 naming the header. One that arrives while the
first is still in flight waits for it (polling, up to WAIT_S, longer than PENDING_S: by then
the first has written its job or its claim has lapsed and this one takes the key), then
replays or writes. Fifty at once make one job and fifty 202s with its id.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import uuid
from dataclasses import dataclass
from enum import Enum
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException

from services.api import formats
from services.api.drain import retry_after_s
from shared import keys
from shared.errors import InvalidRequest, shown
from shared.messages import now_ms
from shared.redis import admission as admission_scripts

log = logging.getLogger(__name__)

IDEMPOTENCY_HEADER = "Idempotency-Key"
GRANT_MS = 60_000  # how long an admission grant holds its place if its job is never written
PENDING_S = 10  # how long a claimed key stays claimed if its request dies before the job exists
WAIT_S = 12.0  # how long a request waits for another one with its key (longer: a dead claim lapses)

# -- admission ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ByteBudget:
    """A job's place in the byte budget: its stored bytes (shared.jobs.stored_bytes), the budget
    (DLPIPE_MAX_BACKLOG_BYTES) and the rate bytes are given back (bytes/s, None: unknown)."""

    job_bytes: int
    max_bytes: int
    freed_per_s: float | None = None


async def admit(
    client: Redis,
    pipeline: str,
    items: int,
    max_backlog: int,
    drain_per_s: float | None = None,
    budget: ByteBudget | None = None,
) -> str:
    """Take a grant for a job of `items` items (and, with a `budget`, its bytes), or raise 429
    (`Retry-After` from the pipeline's drain rate, `drain_per_s` items/s, or for bytes from the
    budget's; None: unknown); returns the grant (for queue_new_job)."""
    grant = uuid.uuid4().hex
    ask = None if budget is None else admission_scripts.ByteAsk(budget.max_bytes, budget.job_bytes)
    reply = await admission_scripts.admit(
        pipeline=pipeline,
        now=now_ms(),
        grant_ms=GRANT_MS,
        max_backlog=max_backlog,
        grant=grant,
        items=items,
        budget=ask,
    ).run_async(client)
    backlog = reply.backlog
    if reply.granted:
        return f"{grant}:{items}" if budget is None else f"{grant}:{items}:{budget.job_bytes}"
    if backlog >= max_backlog or budget is None:
        wait_s = retry_after_s(backlog, max_backlog, drain_per_s)
        detail = (
            f"pipeline {pipeline!r} is at capacity: {backlog} items accepted and not finished, "
            f"at most {max_backlog} (DLPIPE_MAX_BACKLOG); retry after {wait_s} s"
        )
    else:
        held = reply.held or 0
        wait_s = retry_after_s(held, budget.max_bytes, budget.freed_per_s)
        detail = (
            f"at capacity: the jobs not finished hold {_size(held)} of inputs in Redis, at most "
            f"{_size(budget.max_bytes)} (DLPIPE_MAX_BACKLOG_BYTES, all pipelines together); "
            f"retry after {wait_s} s"
        )
    raise HTTPException(429, detail, headers={"Retry-After": str(wait_s)})


def _size(n: int) -> str:
    """12345678 -> '12345678 bytes (11.8 MiB)'."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n} bytes ({n / scale:.1f} {unit})"
    return f"{n} bytes"


async def drop_grant(client: Redis, pipeline: str, grant: str) -> None:
    """Give a grant back at once (the job was not written); it would lapse by itself anyway."""
    async with client.pipeline(transaction=False) as pipe:
        pipe.zrem(keys.admissions(pipeline), grant)
        pipe.zrem(keys.BYTE_GRANTS, grant)
        await pipe.execute()


# -- idempotency ----------------------------------------------------------------------------


def check_key(value: str) -> str:
    if not formats.matches(formats.IDEMPOTENCY_KEY, value):
        raise InvalidRequest(
            f"{IDEMPOTENCY_HEADER} must be 1 to 255 printable ASCII characters", field=IDEMPOTENCY_HEADER
        )
    return value


def fingerprint(pipeline: str, media_type: str, request_digest: str) -> str:
    """What the request asks, for its Idempotency-Key: the pipeline, the media type and the
    digest of the request as parsed (ParsedJob.digest: canonical JSON, or the form's fields and
    files' contents), so neither whitespace, key order nor a multipart boundary make it another."""
    digest = hashlib.sha256()
    for part in (pipeline, "\0", media_type, "\0", request_digest):
        digest.update(part.encode())
    return digest.hexdigest()


class Settled(str, Enum):
    """What became of a claim's write when its transaction's WATCH failed (Claim.settle)."""

    written = "written"  # EXEC ran (the key holds this job's final record); only its answer was lost
    taken = "taken"  # another request holds the key: this one wrote nothing
    lost = "lost"  # still this request's pending claim (the connection broke), or Redis is away


@dataclass(frozen=True)
class Claim:
    """This request holds the key: it writes the job, and the final record with it."""

    redis_key: str
    fingerprint: str
    job_id: str
    pending: str  # the exact pending record it wrote

    async def fence(self, pipe: Any) -> None:
        """Start the job's transaction on `pipe` (MULTI) only while the key holds this claim,
        watched till EXEC, which then fails (WatchError) if a retry took the key over meanwhile;
        409 if one has already."""
        await pipe.watch(self.redis_key)
        current = await pipe.get(self.redis_key)
        if current is None or (current.decode() if isinstance(current, bytes) else current) != self.pending:
            await pipe.reset()
            raise self.taken_over()
        pipe.multi()

    async def settle(self, client: Redis) -> Settled:
        """What became of this claim's write after a WatchError (EXEC refused, or the connection
        lost while watching, when it cannot tell): read the key again. Redis unreachable: LOST."""
        try:
            raw = await client.get(self.redis_key)
        except (RedisError, OSError):
            return Settled.lost
        text = raw.decode() if isinstance(raw, bytes) else raw
        if text == self.pending:
            return Settled.lost
        if text is not None and json.loads(text).get("job") == self.job_id:
            return Settled.written
        return Settled.taken

    def taken_over(self) -> HTTPException:
        return HTTPException(
            409,
            f"this request's claim on its {IDEMPOTENCY_HEADER} lapsed and a retry took it over; "
            "retry it to get that request's job",
        )

    def record(self, pipe: Any, response: dict[str, Any], ttl_s: int) -> None:
        """Add to the job's MULTI: the key's final record (the job and its 202 body)."""
        final = {"fingerprint": self.fingerprint, "job": self.job_id, "response": response}
        pipe.set(self.redis_key, json.dumps(final, separators=(",", ":")), ex=ttl_s)


@dataclass(frozen=True)
class Replay:
    """Another request with this key made the job: answer what it answered."""

    job_id: str
    response: dict[str, Any]
    redis_key: str = ""  # the key's record (services/api/replication.py confirm_replay reads it again)


async def claim(
    client: Redis, caller: str, key: str, fingerprint: str, job_id: str, wait_s: float = WAIT_S
) -> Claim | Replay:
    """Claim the key for a job about to be written, or the replay of the job it already made.
    422 if the key was used with another request; 409 if its first request is still in flight
    after `wait_s`."""
    key_digest = hashlib.sha256(key.encode()).hexdigest()
    redis_key = keys.idempotency(caller, key_digest)
    pending = json.dumps({"fingerprint": fingerprint, "job": job_id, "state": "pending"})
    deadline = time.monotonic() + wait_s
    delay = 0.005
    while True:
        if await client.set(redis_key, pending, nx=True, ex=PENDING_S):
            return Claim(redis_key, fingerprint, job_id, pending)
        raw = await client.get(redis_key)
        if raw is not None:
            record = json.loads(raw)
            if record.get("fingerprint") != fingerprint:
                raise InvalidRequest(
                    f"{IDEMPOTENCY_HEADER} {shown(key)} was already used for a different request "
                    "(another pipeline or body); use a new key for a new request",
                    field=IDEMPOTENCY_HEADER,
                )
            if "response" in record:
                return Replay(str(record["job"]), record["response"], redis_key)
        # The first request with this key is writing its job (or the claim just lapsed): wait.
        if time.monotonic() >= deadline:
            raise HTTPException(
                409,
                f"a request with {IDEMPOTENCY_HEADER} {shown(key)} is still in progress; retry it shortly",
            )
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.1)


async def release(client: Redis, held: Claim) -> None:
    """Give the key up (the job was not written), if it still holds this request's claim."""
    await admission_scripts.idempotency_release(redis_key=held.redis_key, claim=held.pending).run_async(
        client
    )


_releasing: set[asyncio.Task[None]] = set()


async def give_back(client: Redis, held: Claim) -> None:
    """Release the claim of a request that wrote nothing. Redis away (the very reason, often):
    keep trying in the background for as long as the claim would hold (PENDING_S), so that the
    client's retry goes through as soon as Redis is back, not PENDING_S later."""
    try:
        await release(client, held)
    except (RedisError, OSError) as exc:
        log.info("the Idempotency-Key claim of job=%s is released later (%s)", held.job_id, exc)
        task = asyncio.create_task(_release_until_done(client, held, time.monotonic() + PENDING_S))
        _releasing.add(task)
        task.add_done_callback(_releasing.discard)


async def _release_until_done(client: Redis, held: Claim, deadline: float) -> None:
    delay = 0.05
    while time.monotonic() < deadline:
        await asyncio.sleep(delay)
        try:
            await release(client, held)
            return
        except (RedisError, OSError):
            delay = min(delay * 2, 1.0)
