"""Synchronous front doors (services/api/protocols): a job written exactly as `POST .../jobs`
writes it (job_writer.admit_and_write: the same admission, backpressure and transaction, so its
items batch with everyone else's), then waited for with the job waiters until it ends.

The job gets DLPIPE_SYNC_TIMEOUT_S as its deadline (`timeout_s`): a job whose request gave up
is not worked on after it (its items fail as expired and are skipped). A job not final a little
after that deadline (the sweep that expires items runs every DLPIPE_DEADLINE_SWEEP_INTERVAL_MS),
or final with items that expired, is TimedOut (504).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import replace
from typing import Any

from fastapi import Request

from services.api.inputs import ParsedJob
from services.api.job_writer import admit_and_write
from services.api.routers.jobs import read_job
from services.api.waiters import JobWaiters
from shared.errors import TimedOut
from shared.messages import ItemOutput, ItemStatus, JobView
from shared.pipeline_spec import PipelineSpec
from shared.settings import Settings

log = logging.getLogger(__name__)

EXPIRED_PREFIX = "expired"  # shared.jobs.expired_reason / TTL_EXPIRED_REASON


async def run_to_end(
    request: Request,
    client: Any,
    settings: Settings,
    waiters: JobWaiters,
    pipeline: PipelineSpec,
    parsed: ParsedJob,
) -> JobView:
    """Write the job as submit does and wait for its end: the final view, or TimedOut."""
    timeout_s = settings.sync_timeout_s
    job_id = uuid.uuid4().hex
    grace_s = 2 * settings.deadline_sweep_interval_ms / 1000 + 0.5
    async with waiters.watching(job_id) as watch:  # before the write: no end goes unseen
        accepted = await admit_and_write(
            request, client, settings, pipeline, replace(parsed, timeout_s=timeout_s), job_id, None
        )
        final = await watch.until_final(
            timeout_s + grace_s, lambda: read_job(client, job_id), current=accepted.view
        )
    if not final.status.is_final or any(_expired(o) for o in final.outputs):
        log.info("job=%s did not end within the synchronous timeout of %g s", job_id, timeout_s)
        raise TimedOut(
            f"job {job_id} did not finish within {timeout_s:g} s (DLPIPE_SYNC_TIMEOUT_S); its "
            "unfinished inputs were dropped: retry, or submit large requests as jobs (POST /v1/pipelines/"
            f"{pipeline.name}/jobs)"
        )
    return final


def _expired(output: ItemOutput) -> bool:
    return output.status is ItemStatus.failed and (output.error or "").startswith(EXPIRED_PREFIX)


def failed_items(view: JobView) -> list[ItemOutput]:
    """The outputs that did not succeed (failed or canceled), in input order."""
    return [o for o in view.outputs if o.status is not ItemStatus.succeeded]
