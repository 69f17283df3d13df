"""Read jobs back and cancel them (submitting is services/api/routers/submit.py)."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from starlette.exceptions import HTTPException

from services.api.cancel import Canceled, cancel
from services.api.deps import OwnedJobId, RedisDep, SettingsDep, WaitersDep
from services.api.redis_memory import read_keys
from services.api.replication import unconfirmed
from services.api.routers.webhooks import with_delivery_state
from services.api.schemas import ErrorBody
from services.api.views import job_response
from shared import keys
from shared.errors import NotFound, shown
from shared.job_record import job_view_from_redis
from shared.messages import JobView

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", tags=["jobs"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "No such job."},
    422: {"model": ErrorBody, "description": "The request is not valid; `field` names what."},
    503: {"model": ErrorBody, "description": "Redis is unavailable (or full, for a cancel)."},
}


@router.get(
    "/jobs/{job_id}",
    response_model=JobView,
    summary="Get a job",
    description=(
        "The job's status, progress and outputs (in input order; `pending` until an item is "
        "done). Jobs are kept for the configured time (`DLPIPE_JOB_TTL_S`) after their last change.\n\n"
        "`wait_s` makes it a long poll: the answer comes as soon as the job ends, or after `wait_s` "
        "seconds (at most `DLPIPE_MAX_WAIT_S`) with the job as it is then."
    ),
    responses=_ERRORS,
)
async def get_job(
    client: RedisDep,
    settings: SettingsDep,
    waiters: WaitersDep,
    job_id: OwnedJobId,
    wait_s: Annotated[
        float,
        Query(
            ge=0, le=3600, description="Wait up to this many seconds for the job to end (0: answer at once)."
        ),
    ] = 0,
) -> Response:
    wait_s = min(wait_s, settings.max_wait_s)
    if wait_s <= 0:
        return job_response(await read_job(client, job_id))
    # Watch first, then read: an end between the two still wakes the watch.
    view = await waiters.read_until_final(job_id, wait_s, lambda: read_job(client, job_id))
    return job_response(view)


async def read_job(client: Any, job_id: str) -> JobView:
    """The job as GET shows it (with its webhook's delivery state); NotFound if there is none."""
    job, outputs, deliveries = await read_keys(
        client, [keys.job(job_id), keys.job_outputs(job_id), keys.job_webhook(job_id)]
    )
    if not job:
        raise NotFound(f"no job {shown(job_id)}")
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
    job_id: OwnedJobId,
) -> Response:
    outcome, status, seen = await cancel(client, settings, job_id)
    if outcome is Canceled.no_job:
        raise NotFound(f"no job {shown(job_id)}")
    if outcome is Canceled.ended:
        raise HTTPException(409, f"job {shown(job_id)} has already ended: {status}")
    if not seen.confirmed:
        raise unconfirmed(f"job {shown(job_id)} is canceled", seen, "retry: 409 (ended) says it stuck")
    return job_response(await read_job(client, job_id))
