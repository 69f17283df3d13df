"""The scripts of admission and its counts: ADMIT, IDEMPOTENCY_RELEASE (services/api/admission.py),
RECOUNT_BACKLOG and RECOUNT_BYTES (the deadline sweep, services/api/sweep.py). One typed
function each (shared/redis/scripts.py); what each does: shared/redis/lua/<name>.lua."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from shared import keys
from shared.redis import scripts
from shared.redis.scripts import ScriptCall


@dataclass(frozen=True)
class ByteAsk:
    """The byte budget's part of an admission: its cap, and the job's bytes."""

    max_bytes: int
    job_bytes: int


@dataclass(frozen=True)
class Admitted:
    granted: bool
    backlog: int  # the pipeline's backlog before it (counter + open grants)
    held: int | None = None  # with a ByteAsk: the bytes held before it (+ open byte grants)


def _admitted(reply: Any) -> Admitted:
    return Admitted(bool(int(reply[0])), int(reply[1]), int(reply[2]) if len(reply) > 2 else None)


def admit(
    *,
    pipeline: str,
    now: int,
    grant_ms: int,
    max_backlog: int,
    grant: str,
    items: int,
    budget: ByteAsk | None = None,
) -> ScriptCall[Admitted]:
    """Grant a job of `items` items (and, with `budget`, its bytes) its place, or refuse it."""
    keys_ = [keys.backlog(pipeline), keys.admissions(pipeline)]
    args: list[Any] = [now, grant_ms, max_backlog, grant, items]
    if budget is not None:
        keys_ += [keys.BYTES, keys.BYTE_GRANTS]
        args += [budget.max_bytes, budget.job_bytes]
    return ScriptCall(scripts.ADMIT, keys_, args, _admitted)


def idempotency_release(*, redis_key: str, claim: str) -> ScriptCall[bool]:
    """Delete an idempotency key (keys.idempotency) only while it holds this request's claim;
    True when deleted."""
    return ScriptCall(scripts.IDEMPOTENCY_RELEASE, [redis_key], [claim], lambda reply: bool(int(reply)))


@dataclass(frozen=True)
class Recounted:
    before: int
    after: int
    dropped: int = 0  # members of the deadlines set whose record was gone


def recount_backlog(*, pipeline: str) -> ScriptCall[Recounted]:
    """Set the pipeline's backlog counter to what its open jobs hold."""
    return ScriptCall(
        scripts.RECOUNT_BACKLOG,
        [keys.backlog(pipeline), keys.deadlines(pipeline)],
        [keys.job("")],
        lambda reply: Recounted(*(int(v) for v in reply)),
    )


def recount_bytes(*, pipelines: Iterable[str]) -> ScriptCall[Recounted]:
    """Set the byte budget's `held` to what the open jobs of these pipelines hold."""
    return ScriptCall(
        scripts.RECOUNT_BYTES,
        [keys.BYTES, *(keys.deadlines(name) for name in pipelines)],
        [keys.job("")],
        lambda reply: Recounted(*(int(v) for v in reply)),
    )
