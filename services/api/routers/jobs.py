"""Read jobs back and cancel them (submitting is services/api/routers/submit.py)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter
from starlette.exceptions import HTTPException

from services.api.deps import JobIdPath, RedisDep, SettingsDep, check_job_id
from services.api.routers.webhooks import with_delivery_state
from services.api.schemas import ErrorBody
from shared import keys
from shared.errors import NotFound
from shared.messages import JobView, job_view_from_redis, now_ms
from workers import scripts

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", tags=["jobs"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "No such job."},
    422: {"model": ErrorBody, "description": "The request is not valid; `field` names what."},
    503: {"model": ErrorBody, "description": "Redis is unavailable."},
}


@router.get(
    "/jobs/{job_id}",
    response_model=JobView,
    summary="Get a job",
    description=(
        "The job's status, progress and outputs (in input order; `pending` until an item is "
        "done). Jobs are kept for the configured time (`DLPIPE_JOB_TTL_S`) after their last change."
    ),
    responses=_ERRORS,
)
async def get_job(
    client: RedisDep,
    job_id: JobIdPath,
) -> JobView:
    check_job_id(job_id)
    async with client.pipeline(transaction=True) as pipe:
        pipe.hgetall(keys.job(job_id))
        pipe.hgetall(keys.job_outputs(job_id))
        pipe.hgetall(keys.job_webhook(job_id))
        job, outputs, deliveries = await pipe.execute()
    if not job:
        raise NotFound(f"no job {job_id!r}")
    return await with_delivery_state(client, job_view_from_redis(job, outputs), deliveries)


@router.post(
    "/jobs/{job_id}/cancel",
    response_model=JobView,
    summary="Cancel a job",
    description=(
        "Stop a job that has not ended: it ends at once as `canceled` (`completed_at` set, "
        "`error` saying how many items had not finished), its webhook gets one `job.completed` "
        "event, and the workers skip its items that have not run (an item already in a stage "
        "finishes that stage, and its result is dropped). Outputs that had finished keep their "
        "results; the others show `canceled`. 409 if the job had ended already (its status is "
        "in `detail`)."
    ),
    responses={
        **_ERRORS,
        409: {"model": ErrorBody, "description": "The job had ended already (succeeded, failed, canceled)."},
    },
)
async def cancel_job(
    client: RedisDep,
    settings: SettingsDep,
    job_id: JobIdPath,
) -> JobView:
    check_job_id(job_id)
    pipeline, total = await client.hmget(keys.job(job_id), ["pipeline", "total"])
    if pipeline is None:
        raise NotFound(f"no job {job_id!r}")
    script = client.register_script(scripts.CANCEL_JOB)
    outcome, status = await script(
        keys=[keys.job(job_id), keys.job_outputs(job_id), keys.EVENTS, keys.backlog(_text(pipeline))],
        args=[now_ms(), settings.job_ttl_s, job_id],
    )
    if int(outcome) == -1:
        raise NotFound(f"no job {job_id!r}")
    if int(outcome) == 0:
        raise HTTPException(409, f"job {job_id!r} has already ended: {_text(status)}")
    # The inputs of items that will never run: free them now rather than at the job's TTL.
    async with client.pipeline(transaction=False) as pipe:
        for index in range(int(total or 0)):
            pipe.unlink(keys.item(job_id, index))
        await pipe.execute()
    log.info("job=%s canceled", job_id)
    return await get_job(client, job_id)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
