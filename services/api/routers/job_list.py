"""List jobs: `GET /v1/jobs`, newest first, from the job index (shared/job_index.py), never a SCAN."""

from __future__ import annotations

import json
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from services.api.auth import caller_of
from services.api.deps import RedisDep, SettingsDep
from services.api.schemas import ErrorBody, JobList, JobSummary
from shared import codecs, job_index, keys
from shared.jobs import OPEN_JOB_GRACE_S
from shared.messages import JobStatus, Progress, ms_to_datetime, now_ms
from shared.redis import job_reads

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", tags=["jobs"])

MAX_LIMIT = 200
LOOK_FACTOR = 4  # a page looks at up to this many index members per row asked (expired ones are dropped)


def _summary(row: list[Any]) -> JobSummary:
    job_id, pipeline, status, done, total, created, completed, metadata = (
        codecs.text_or_none(v) for v in row
    )
    meta = None
    if metadata:
        try:
            meta = json.loads(metadata)
        except ValueError:
            log.error("job=%s its metadata cannot be read: left out", job_id)
    return JobSummary(
        id=job_id or "",
        pipeline=pipeline or "",
        status=JobStatus(status),
        progress=Progress(done=int(done or 0), total=int(total or 0)),
        created_at=ms_to_datetime(created or 0),
        completed_at=ms_to_datetime(completed),
        metadata=meta if isinstance(meta, dict) else None,
    )


@router.get(
    "/jobs",
    response_model=JobList,
    summary="List jobs",
    description=(
        "The caller's jobs (with API keys set, those its key submitted; without, all of them), newest "
        "first, as summaries (no outputs), while they are kept (`DLPIPE_JOB_TTL_S`). Filter by "
        "`status` and/or `pipeline`; page with `limit` and the answer's `next_cursor`."
    ),
    responses={
        422: {"model": ErrorBody, "description": "A bad filter, limit or cursor."},
        503: {"model": ErrorBody, "description": "Redis is unavailable."},
    },
)
async def list_jobs(
    request: Request,
    client: RedisDep,
    settings: SettingsDep,
    status: Annotated[JobStatus | None, Query(description="Only jobs in this status.")] = None,
    pipeline: Annotated[str | None, Query(max_length=200, description="Only jobs of this pipeline.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Most jobs in the answer.")] = 50,
    cursor: Annotated[
        str | None,
        Query(pattern=job_index.CURSOR_PATTERN, description="`next_cursor` of the previous page."),
    ] = None,
) -> JobList:
    member, score = job_index.decode_cursor(cursor) if cursor else ("", "0")
    key = keys.job_index(caller_of(request), pipeline, status.value if status else None)
    oldest = job_index.oldest_possible_ms(now_ms(), settings.job_ttl_s, OPEN_JOB_GRACE_S)
    page = await job_reads.job_page(
        index_key=key,
        member=member,
        score=score,
        limit=limit,
        look_at=limit * LOOK_FACTOR + 50,
        status=status,
        oldest_ms=oldest,
    ).run_async(client)
    next_cursor = (
        None if page.next_member is None else job_index.encode_cursor(page.next_member, page.next_score)
    )
    return JobList(jobs=[_summary(row) for row in page.rows], next_cursor=next_cursor)
