"""Canceling a job (POST /v1/jobs/{id}/cancel, and a submit whose write the replicas did not
confirm, services/api/job_writer.py): the CANCEL_JOB script, then its items' inputs freed."""

from __future__ import annotations

import logging
from enum import Enum
from typing import Any

from shared import codecs, keys, redis_conn
from shared.jobs import drop_items
from shared.messages import now_ms
from shared.settings import Settings
from shared.redis import scripts

log = logging.getLogger(__name__)


class Canceled(str, Enum):
    canceled = "canceled"
    no_job = "no_job"
    ended = "ended"  # it had ended already


async def cancel(client: Any, settings: Settings, job_id: str) -> tuple[Canceled, str, redis_conn.Replicated]:
    """End the job as `canceled` if it has not ended: (what happened, the job's status if it had
    ended, what the WAIT after the script said (shared/redis_conn.py wait_after))."""
    pipeline, total = await client.hmget(keys.job(job_id), ["pipeline", "total"])
    if pipeline is None:
        return Canceled.no_job, "", redis_conn.Replicated(0, 0)
    name = codecs.text(pipeline)
    script = scripts.registered(client, scripts.CANCEL_JOB)
    pipe = client.pipeline(transaction=False)
    seen = redis_conn.wait_after(pipe, settings)
    await script(
        keys=[
            keys.job(job_id),
            keys.job_outputs(job_id),
            keys.EVENTS,
            keys.backlog(name),
            keys.deadlines(name),
            keys.METRICS,  # counts the job and its unfinished items as canceled
            keys.BYTES,  # the job's bytes, given back to the byte budget
            keys.job_events(job_id),  # its `completed` event (GET /v1/jobs/{id}/events)
            keys.job_files(job_id),  # its outputs' files, expiring with its outputs
        ],
        args=[now_ms(), settings.job_ttl_s, job_id],
        client=pipe,
    )
    ((outcome, status),) = await pipe.execute()
    if int(outcome) == -1:
        return Canceled.no_job, "", seen
    if int(outcome) == 0:
        return Canceled.ended, codecs.text(status), seen
    # The inputs of items that will never run: free them now rather than at the job's TTL.
    async with client.pipeline(transaction=False) as drop:
        drop_items(drop, job_id, int(total or 0))
        await drop.execute()
    log.info("job=%s canceled", job_id)
    return Canceled.canceled, "", seen

