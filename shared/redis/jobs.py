"""The scripts that change a job and its items: START_JOB, COMPLETE_STAGE, CANCEL_JOB,
EXPIRE_JOB (shared/redis/lua/<name>.lua has what each does). One typed function each: named
arguments in, the script's KEYS and ARGV built here and nowhere else, a ScriptCall out whose
reply reads as a typed result (shared/redis/scripts.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import Any

from shared import codecs, keys
from shared.messages import EventType
from shared.redis import scripts
from shared.redis.scripts import ScriptCall


def start_job(*, job_id: str, now: int) -> ScriptCall[None]:
    """Mark the job running (if still queued) as a worker first takes one of its items."""
    return ScriptCall(scripts.START_JOB, [keys.job(job_id), keys.EVENTS], [now, job_id], lambda _: None)


class CompleteOutcome(IntEnum):
    """What COMPLETE_STAGE did (an int enum: the script's reply, and Store.complete's)."""

    duplicate = 0  # already final, the job gone, or ended: acknowledged, nothing recorded
    recorded = 1  # the stage's output recorded (downstream stages queued when ready)
    item_finished = 2
    job_finished = 3


@dataclass(frozen=True)
class Downstream:
    """A stage to queue once its needs are there: its stream (of the item's priority), its
    name, and the item-hash fields of its needs."""

    stream: str  # the stream's key
    stage: str
    need_fields: Sequence[str]


def complete_stage(
    *,
    job_id: str,
    index: int,
    pipeline: str,
    stream: str,
    group: str,
    entry_id: str,
    now: int,
    ttl_s: int,
    output_field: str,
    payload: bytes | str,
    final_json: str = "",
    failed: bool = False,
    downstream: Sequence[Downstream] = (),
    dead_letter: Mapping[str, str] | None = None,
    event: EventType = EventType.completed,
) -> ScriptCall[CompleteOutcome]:
    """Record one stage's result for item `index` of `job_id` (read from `stream`, entry
    `entry_id` of `group`) and acknowledge its entry; `final_json` (the ItemOutput) for a final
    result, `output_field`/`payload` the stage's output (for a final result that succeeded: its
    files' manifest and bytes, shared/files.py); `dead_letter`: the fields of the entry's
    dead-letter entry, when it is given up (the item fails)."""
    keys_ = [keys.item(job_id, index), keys.job(job_id), keys.job_outputs(job_id), stream, keys.EVENTS]
    keys_ += [d.stream for d in downstream]
    args: list[Any] = [
        group,
        entry_id,
        index,
        now,
        ttl_s,
        output_field,
        payload,
        final_json,
        "1" if failed else "0",
        job_id,
        pipeline,
        event.value,
        len(downstream),
    ]
    for d in downstream:
        args += [d.stage, len(d.need_fields), *d.need_fields]
    if dead_letter:
        keys_.append(keys.DEADLETTER)
        for name, value in dead_letter.items():
            args += [name, value]
    # The optional keys, last: the pipeline's counters and deadlines set, the metrics hash (final
    # statuses are counted there), the byte budget (a job that ends gives its bytes back), the
    # job's event stream and its files hash.
    keys_ += [
        keys.backlog(pipeline),
        keys.drained(pipeline),
        keys.deadlines(pipeline),
        keys.METRICS,
        keys.BYTES,
        keys.job_events(job_id),
        keys.job_files(job_id),
    ]
    return ScriptCall(scripts.COMPLETE_STAGE, keys_, args, lambda reply: CompleteOutcome(int(reply)))


class Canceled(str, Enum):
    canceled = "canceled"
    no_job = "no_job"
    ended = "ended"  # it had ended already


@dataclass(frozen=True)
class CancelReply:
    outcome: Canceled
    status: str = ""  # the job's status, when it had ended already


def _cancel_reply(reply: Any) -> CancelReply:
    outcome, status = reply
    if int(outcome) == -1:
        return CancelReply(Canceled.no_job)
    if int(outcome) == 0:
        return CancelReply(Canceled.ended, codecs.text(status))
    return CancelReply(Canceled.canceled)


def _ending_keys(job_id: str, pipeline: str) -> list[str]:
    """CANCEL_JOB's and EXPIRE_JOB's keys (the same nine)."""
    return [
        keys.job(job_id),
        keys.job_outputs(job_id),
        keys.EVENTS,
        keys.backlog(pipeline),
        keys.deadlines(pipeline),  # which the job leaves
        keys.METRICS,  # counts the job and its unfinished items
        keys.BYTES,  # the job's bytes, given back to the byte budget
        keys.job_events(job_id),  # its `completed` event (GET /v1/jobs/{id}/events)
        keys.job_files(job_id),  # its outputs' files, expiring with its outputs
    ]


def cancel_job(*, job_id: str, pipeline: str, now: int, ttl_s: int) -> ScriptCall[CancelReply]:
    """End the job as `canceled` if it has not ended."""
    return ScriptCall(scripts.CANCEL_JOB, _ending_keys(job_id, pipeline), [now, ttl_s, job_id], _cancel_reply)


class Expired(str, Enum):
    ended = "ended"
    nothing = "nothing"  # not due, or ended already
    gone = "gone"  # its record vanished while it was open (RECOUNT_BACKLOG, RECOUNT_BYTES)


@dataclass(frozen=True)
class ExpireReply:
    outcome: Expired
    failed: int = 0  # the items it failed
    total: int = 0  # the job's items


def _expire_reply(reply: Any) -> ExpireReply:
    outcome, failed, total = (int(v) for v in reply)
    kind = {1: Expired.ended, 0: Expired.nothing, -1: Expired.gone}[outcome]
    return ExpireReply(kind, failed, total)


def expire_job(
    *, job_id: str, pipeline: str, now: int, ttl_s: int, timeout_reason: str, ttl_reason: str
) -> ScriptCall[ExpireReply]:
    """End a job that is due (deadlines set); `timeout_reason` a format string given its
    `timeout_s`, `ttl_reason` the reason of a job without one."""
    args = [now, ttl_s, job_id, timeout_reason, ttl_reason]
    return ScriptCall(scripts.EXPIRE_JOB, _ending_keys(job_id, pipeline), args, _expire_reply)
