"""A job's webhook deliveries: their state in `GET /v1/jobs/{id}`, and sending one again."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter
from redis.asyncio import Redis

from services.api.deps import JobIdPath, RedisDep, SettingsDep, check_job_id
from services.api.redis_memory import read_keys
from services.api.schemas import ErrorBody
from shared import keys
from shared import webhooks as state
from shared.errors import Conflict, NotFound
from shared.messages import JobView, WebhookView, job_view_from_redis, now_ms

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
        "notifier sends it. Also lifts a 410 Gone the receiver gave for the job."
    ),
    responses={
        404: {"model": ErrorBody, "description": "No such job, or the job has no webhook."},
        409: {
            "model": ErrorBody,
            "description": "Nothing sent yet, or the delivery is still in flight (pending, delivering, or "
            "failed with a retry due).",
        },
        503: {"model": ErrorBody, "description": "Redis is unavailable."},
    },
)
async def redeliver(
    client: RedisDep,
    settings: SettingsDep,
    job_id: JobIdPath,
) -> WebhookView:
    check_job_id(job_id)
    async with client.pipeline(transaction=True) as pipe:
        pipe.hgetall(keys.job(job_id))
        pipe.hgetall(keys.job_webhook(job_id))
        job, deliveries = await pipe.execute()
    if not job:
        raise NotFound(f"no job {job_id!r}")
    view = job_view_from_redis(job, {})
    if view.webhook is None:
        raise NotFound(f"job {job_id!r} has no webhook")
    delivery = state.shown_delivery(deliveries)
    if delivery is None:
        raise Conflict(f"job {job_id!r}: no webhook event has been sent yet")
    script = client.register_script(state.REDELIVER)
    reply = await script(
        keys=[keys.webhook(delivery), keys.job_webhook(job_id), keys.EVENTS],
        args=[now_ms(), settings.job_ttl_s, job_id, delivery],
    )
    if int(reply[0]) == -1:
        raise Conflict(f"job {job_id!r}: its webhook delivery {delivery} is gone (expired)")
    if int(reply[0]) == 0:
        raise Conflict(
            f"job {job_id!r}: its webhook delivery {delivery} is still in flight ({state.text(reply[1])})"
        )
    log.info("job=%s webhook %s redelivery requested (round %s)", job_id, delivery, reply[1])
    return (await with_delivery_state(client, view, deliveries)).webhook  # type: ignore[return-value]
