"""The job index: each owner's jobs, newest first, for `GET /v1/jobs`, with no SCAN.

Four sorted sets per job (keys.job_index), scored by its creation (ms): its owner's, its owner's
of its pipeline, and the two of its status (all pipelines, its pipeline). The job's MULTI
(shared/jobs.py index_new_job) adds them and records `ix` (the owner's set, the prefix of the
others) in the job hash; the scripts that change its status (shared/redis/lua) move it between
the status sets with `reindex` (shared/redis/lua/reindex.lua), in the step that changes it. A job whose record has no `ix` (written
before the index existed) is in no set.

Expiry: the job record expires (its TTL); its index entries are dropped when a listing meets
them (JOB_PAGE, shared/redis/lua/job_page.lua, drops the ids whose record is gone from the set it reads) and by score: nothing
created more than `2 * ttl + OPEN_JOB_GRACE_S` ago can still exist (an open job ends by its TTL,
then is kept a TTL more), so JOB_PAGE trims the set it reads and the API's sweep trims every set
below that (trim_index).

The scripts that end a job also run `job_ended` (shared/redis/lua/job_ended.lua): the index
move, the kept inputs' TTL (keep_inputs), the job's `completed` event (keys.job_events) and its
latency (metrics.JOB_SECONDS).
"""

from __future__ import annotations

import re
from typing import Any

from shared import keys
from shared.errors import InvalidRequest
from shared.messages import JobStatus

JOB_EVENTS_MAXLEN = 1000  # a job's event stream keeps about this many entries (MAXLEN ~)
OWNERS_KEY = keys.INDEX_OWNERS


def index_new_job(pipe: Any, job_id: str, owner: str, pipeline: str, created_ms: int) -> dict[str, str]:
    """Add a new (queued) job to its owner's index sets (in the job's MULTI); returns the fields
    its hash gets (`owner`, and `ix`, which the status scripts name the sets from)."""
    status = JobStatus.queued.value
    for key in (
        keys.job_index(owner),
        keys.job_index(owner, status=status),
        keys.job_index(owner, pipeline),
        keys.job_index(owner, pipeline, status),
    ):
        pipe.zadd(key, {job_id: created_ms})
    pipe.sadd(OWNERS_KEY, owner)
    return {"owner": owner, "ix": keys.job_index(owner)}


def oldest_possible_ms(now_ms: int, ttl_s: int, grace_s: int) -> int:
    """No job created before this (ms) can still exist: an open job ends by its TTL's end (the
    sweep), kept `grace_s` more at most while open, then a TTL once ended."""
    return now_ms - (2 * ttl_s + grace_s) * 1000


def index_keys(owner: str, pipelines: list[str]) -> list[str]:
    """Every index set of one owner, for these pipelines."""
    statuses: list[str | None] = [None, *(s.value for s in JobStatus)]
    return [keys.job_index(owner, p, s) for p in [None, *pipelines] for s in statuses]


def trim_index(pipe: Any, owners: list[str], pipelines: list[str], before_ms: int) -> None:
    """Drop from every index set the members scored below `before_ms` (they cannot exist)."""
    for owner in owners:
        for key in index_keys(owner, pipelines):
            pipe.zremrangebyscore(key, "-inf", f"({before_ms}")


CURSOR_PATTERN = r"^[0-9]{1,17}\.[A-Za-z0-9_-]{1,64}$"  # `<score>.<job id>`: opaque to clients
_CURSOR = re.compile(CURSOR_PATTERN)


def encode_cursor(member: str, score: str) -> str:
    return f"{int(float(score))}.{member}"


def decode_cursor(cursor: str) -> tuple[str, str]:
    """(member, score) of a cursor from encode_cursor; InvalidRequest if it is not one."""
    if not _CURSOR.match(cursor):
        raise InvalidRequest("cursor: not a cursor this API gave", field="cursor")
    score, _, member = cursor.partition(".")
    return member, score
