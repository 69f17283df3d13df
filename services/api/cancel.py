"""Canceling a job (POST /v1/jobs/{id}/cancel, and a submit whose write the replicas did not
confirm, services/api/job_writer.py): the CANCEL_JOB script, then its items' inputs freed."""

from __future__ import annotations

import logging
from typing import Any

from shared import codecs, keys, redis_conn
from shared.jobs import drop_items
from shared.messages import now_ms
from shared.redis import jobs as job_scripts
from shared.redis.jobs import Canceled
from shared.settings import Settings

__all__ = ["Canceled", "cancel"]

log = logging.getLogger(__name__)


async def cancel(client: Any, settings: Settings, job_id: str) -> tuple[Canceled, str, redis_conn.Replicated]:
    """End the job as `canceled` if it has not ended: (what happened, the job's status if it had
    ended, what the WAIT after the script said (shared/redis_conn.py wait_after))."""
    pipeline, total = await client.hmget(keys.job(job_id), ["pipeline", "total"])
    if pipeline is None:
        return Canceled.no_job, "", redis_conn.Replicated(0, 0)
    name = codecs.text(pipeline)
    pipe = client.pipeline(transaction=False)
    seen = redis_conn.wait_after(pipe, settings)
    call = job_scripts.cancel_job(job_id=job_id, pipeline=name, now=now_ms(), ttl_s=settings.job_ttl_s)
    await call.queue_async(pipe)
    (reply,) = await pipe.execute()
    done = call.read(reply)
    if done.outcome != Canceled.canceled:
        return done.outcome, done.status, seen
    # The inputs of items that will never run: free them now rather than at the job's TTL.
    async with client.pipeline(transaction=False) as drop:
        drop_items(drop, job_id, int(total or 0))
        await drop.execute()
    log.info("job=%s canceled", job_id)
    return Canceled.canceled, "", seen
