"""A job's webhook deliveries: their state in `GET /v1/jobs/{id}`, and sending one again."""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import APIRouter
from redis.asyncio import Redis
from starlette.exceptions import HTTPException

from services.api.deps import OwnedJobId, RedisDep, SettingsDep
from services.api.redis_memory import read_keys
from services.api.schemas import ErrorBody
from shared import keys
from shared import webhooks as state
from shared.errors import Conflict, NotFound, shown
from shared.job_record import job_view_from_redis
from shared.messages import JobView, WebhookView, now_ms
from shared.redis import webhooks as webhook_scripts

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", tags=["jobs"])


async def with_delivery_state(client: Redis, view: JobView, deliveries: dict[Any, Any]) -> JobView:
    """The job with its webhook's latest delivery (job.completed's once there is one), if any."""
    delivery = state.shown_delivery(deliveries)
    if view.webhook is None or delivery is None:
        return view
    fields, attempts = await read_keys(client, [keys.webhook(delivery)], [keys.webhook_attempts(delivery)])
    return view.model_copy(update={"webhook": state.with_delivery(view.webhook, fields, attempts)})


@router.post(
    "/jobs/{job_id}/webhook/redeliver",
    status_code=202,
    response_model=WebhookView,
    summary="Send a job's webhook again",
    description=(
        "Queue the job's latest webhook delivery (its job.completed event once the job has "
        "finished) for a new round of attempts, with the same `webhook-id` and a fresh retry "
        "schedule: for a delivery that was dead-lettered (`webhook.state` `dead`) or that a "
        "receiver wants again. Answers at once (202) with the webhook, `state` `pending`; the "
        "notifier sends it. Also lifts a 410 Gone the receiver gave for the job. At most one "
        "redelivery per job per `DLPIPE_WEBHOOK_REDELIVER_INTERVAL_S` (default 5 s): sooner, 429."
    ),
    responses={
        404: {"model": ErrorBody, "description": "No such job, or the job has no webhook."},
        409: {
            "model": ErrorBody,
            "description": "Nothing sent yet, or the delivery is still in flight (pending, delivering, or "
            "failed with a retry due).",
        },
        429: {
            "model": ErrorBody,
            "description": "The job's webhook was redelivered less than "
            "`DLPIPE_WEBHOOK_REDELIVER_INTERVAL_S` ago: retry after `Retry-After` s.",
            "headers": {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}},
        },
        503: {"model": ErrorBody, "description": "Redis is unavailable."},
    },
)
async def redeliver(
    client: RedisDep,
    settings: SettingsDep,
    job_id: OwnedJobId,
) -> WebhookView:
    async with client.pipeline(transaction=True) as pipe:
        pipe.hgetall(keys.job(job_id))
        pipe.hgetall(keys.job_webhook(job_id))
        job, deliveries = await pipe.execute()
    if not job:
        raise NotFound(f"no job {shown(job_id)}")
    view = job_view_from_redis(job, {})
    if view.webhook is None:
        raise NotFound(f"job {shown(job_id)} has no webhook")
    delivery = state.shown_delivery(deliveries)
    if delivery is None:
        raise Conflict(f"job {shown(job_id)}: no webhook event has been sent yet")
    interval_ms = round(settings.webhook_redeliver_interval_s * 1000)
    reply = await webhook_scripts.webhook_redeliver(
        delivery=delivery, job_id=job_id, now=now_ms(), ttl_s=settings.job_ttl_s, interval_ms=interval_ms
    ).run_async(client)
    if reply.outcome == webhook_scripts.Redelivery.too_soon:
        wait_s = max(1, math.ceil(reply.wait_ms / 1000))
        raise HTTPException(
            429,
            f"job {job_id!r}: its webhook was redelivered less than "
            f"{settings.webhook_redeliver_interval_s:g} s ago (DLPIPE_WEBHOOK_REDELIVER_INTERVAL_S); "
            f"retry after {wait_s} s",
            headers={"Retry-After": str(wait_s)},
        )
    if reply.outcome == webhook_scripts.Redelivery.gone:
        raise Conflict(f"job {shown(job_id)}: its webhook delivery {delivery} is gone (expired)")
    if reply.outcome == webhook_scripts.Redelivery.in_flight:
        raise Conflict(
            f"job {shown(job_id)}: its webhook delivery {delivery} is still in flight ({reply.state})"
        )
    log.info("job=%s webhook %s redelivery requested (round %s)", job_id, delivery, reply.round)
    return (await with_delivery_state(client, view, deliveries)).webhook  # type: ignore[return-value]
