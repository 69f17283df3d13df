"""The scripts that read jobs in one atomic step: JOB_SNAPSHOT (GET /v1/jobs/{id}/events,
services/api/sse.py), JOB_PAGE (GET /v1/jobs), READ (services/api/redis_memory.py: reads that
work while Redis is full). One typed function each (shared/redis/scripts.py); what each does:
shared/redis/lua/<name>.lua."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from shared import codecs, keys
from shared.messages import JobStatus
from shared.redis import scripts
from shared.redis.scripts import ScriptCall


@dataclass(frozen=True)
class JobSnapshot:
    """A job's state and its event stream's end, read at one instant."""

    job: dict[str, str]  # the job hash ({}: no such job)
    outputs: list[Any]  # the outputs hash, flat (field, value, ...): every output, unless resumed
    last: str  # the event stream's last id ('0-0': none)
    resumed: bool  # the entries after the resume id (and their outputs) came instead
    entries: list[Any]  # [[id, [field, value, ...]]...]
    entry_outputs: list[Any]  # per `o` entry, its item's output


def _snapshot(reply: Any) -> JobSnapshot:
    flat, outputs, last, resumed, entries, entry_outputs = reply
    job = {codecs.text(k): codecs.text(v) for k, v in zip(flat[::2], flat[1::2], strict=True)}
    return JobSnapshot(
        job, list(outputs), codecs.text(last), bool(int(resumed)), list(entries), list(entry_outputs)
    )


def job_snapshot(*, job_id: str, resume_id: str = "") -> ScriptCall[JobSnapshot]:
    """The job's state and event stream's end; with a `resume_id` still in the stream, the
    entries after it (and their items' outputs) in place of every output."""
    return ScriptCall(
        scripts.JOB_SNAPSHOT,
        [keys.job(job_id), keys.job_outputs(job_id), keys.job_events(job_id)],
        [resume_id],
        _snapshot,
    )


@dataclass(frozen=True)
class JobPage:
    rows: list[list[Any]]  # {id, pipeline, status, done, total, created_at, completed_at, metadata}
    next_member: str | None  # the next page's cursor (None: this was the last page)
    next_score: str


def _page(reply: Any) -> JobPage:
    rows, last, last_score = reply
    member = codecs.text_or_none(last) or ""
    return JobPage(list(rows), member if last else None, codecs.text_or_none(last_score) or "0")


def job_page(
    *,
    index_key: str,
    member: str,
    score: str,
    limit: int,
    look_at: int,
    status: JobStatus | None,
    oldest_ms: int,
) -> ScriptCall[JobPage]:
    """One page of the index set `index_key` (keys.job_index), newest first, from the cursor
    (`member`, `score`; '' from the start), at most `look_at` members looked at, only jobs in
    `status` (None: any), scores below `oldest_ms` dropped."""
    args = [member, score, limit, look_at, status.value if status else "", keys.job(""), oldest_ms]
    return ScriptCall(scripts.JOB_PAGE, [index_key], args, _page)


def read_keys(*, hashes: Sequence[str], lists: Sequence[str] = ()) -> ScriptCall[list[Any]]:
    """HGETALL of each hash (as dicts), then LRANGE 0 -1 of each list, in one atomic step that
    works while Redis is over its maxmemory."""
    n = len(hashes)

    def read(replies: Any) -> list[Any]:
        out: list[Any] = [dict(zip(flat[::2], flat[1::2], strict=True)) for flat in replies[:n]]
        return out + [list(items) for items in replies[n:]]

    return ScriptCall(scripts.READ, [*hashes, *lists], [n], read)
