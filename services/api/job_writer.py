"""Writing an accepted job: its place in the backlog (admission), then the job, its items and
its Idempotency-Key's record in one transaction (services/api/routers/submit.py calls it)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from redis.exceptions import WatchError

from services.api import admission, drain
from services.api.inputs import ParsedJob
from services.api.auth import caller_of
from services.api.redis_memory import transaction
from services.api.views import strict_json
from shared.errors import Unavailable
from shared.jobs import deadline_ms, encode_inputs, groups_record, kept_bytes, queue_new_job, stored_bytes
from shared.messages import JobStatus, JobView, job_view_from_redis, now_ms
from shared.pipeline_spec import PipelineSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Accepted:
    """A job just written: its view, and that view as the 202's JSON body (rendered before the write)."""

    view: JobView
    body: bytes


async def admit_and_write(
    request: Request,
    client: Any,
    settings: Any,
    pipeline: PipelineSpec,
    parsed: ParsedJob,
    job_id: str,
    claim: admission.Claim | None,
) -> Accepted:
    """Take the job's place in the backlog (items and bytes) and write it; on any failure give
    both back."""
    grant: str | None = None
    try:
        rates = request.app.state.drain_rates
        encoded = encode_inputs(parsed.inputs)  # once: their size is what the byte budget counts
        kept = parsed.originals if _keeps(parsed, settings) else None
        budget = admission.ByteBudget(
            stored_bytes(encoded, parsed.blobs) + kept_bytes(kept), settings.max_backlog_bytes,
            rates.rate(drain.BYTES),
        )  # fmt: skip
        grant = await admission.admit(
            client, pipeline.name, len(parsed.inputs), settings.max_backlog, rates.rate(pipeline.name), budget
        )
        owner = caller_of(request)
        return await _write_job(client, settings, pipeline, parsed, job_id, grant, claim, encoded, owner, kept)
    except BaseException:
        # Nothing was written (or we cannot tell): give the key and the grant back, best effort;
        # both lapse by themselves if Redis is not there to hear it.
        if claim is not None:
            await _quietly(admission.give_back(client, claim))
        if grant is not None:
            await _quietly(admission.drop_grant(client, pipeline.name, grant))
        raise


def _keeps(parsed: ParsedJob, settings: Any) -> bool:
    """Whether the job keeps its inputs: its `keep_inputs`, else DLPIPE_KEEP_INPUTS."""
    return settings.keep_inputs if parsed.keep_inputs is None else parsed.keep_inputs


async def _quietly(step: Any) -> None:
    try:
        await step
    except Exception as exc:  # the original error is what the client must see
        log.warning("cleanup after a failed submit failed: %s", exc)


async def _write_job(
    client: Any,
    settings: Any,
    pipeline: PipelineSpec,
    parsed: ParsedJob,
    job_id: str,
    grant: str,
    claim: admission.Claim | None,
    encoded: list[bytes],
    owner: str,
    kept: list[bytes | int | None] | None,
) -> Accepted:
    """Write the job (and the Idempotency-Key's final record) in one transaction; its 202 body,
    rendered first: a job whose answer cannot be rendered is refused, not written."""
    created = now_ms()
    record = {
        "id": job_id,
        "pipeline": pipeline.name,
        "status": JobStatus.queued.value,
        "created_at": str(created),
        "total": str(len(parsed.inputs)),
        "webhook": parsed.webhook or "",
        "webhook_events": ",".join(parsed.webhook_events),
        "metadata": json.dumps(parsed.metadata) if parsed.metadata is not None else "",
        "sources": json.dumps(parsed.sources) if parsed.sources else "",
        "groups": json.dumps(groups_record(parsed.groups, len(parsed.inputs))) if parsed.groups else "",
    }
    if parsed.timeout_s is not None:
        record["deadline"] = str(deadline_ms(created, parsed.timeout_s))
    view = job_view_from_redis(record, {})
    body = strict_json(view)
    try:
        async with transaction(client) as pipe:  # its refusal (Redis full) reported at once
            if claim is not None:
                await claim.fence(pipe)
            queue_new_job(
                pipe,
                job_id=job_id,
                pipeline=pipeline,
                inputs=parsed.inputs,
                webhook=parsed.webhook,
                webhook_events=parsed.webhook_events or None,
                metadata=parsed.metadata,
                ttl_s=settings.job_ttl_s,
                created_ms=created,
                sources=parsed.sources or None,
                groups=parsed.groups or None,
                blobs=parsed.blobs or None,
                item_blobs=parsed.item_blobs or None,
                timeout_s=parsed.timeout_s,
                admission=grant,
                encoded=encoded,
                owner=owner,
                kept=kept,
            )
            if claim is not None:
                claim.record(pipe, view.model_dump(mode="json"), settings.idempotency_ttl_s)
            await pipe.execute()
    except WatchError:  # only a claim's key is watched: a retry took it over, or the connection broke
        assert claim is not None
        settled = await claim.settle(client)
        if settled is admission.Settled.taken:
            raise claim.taken_over() from None
        if settled is admission.Settled.lost:
            raise Unavailable(
                f"redis: the connection broke while job {job_id} was written, so it was not; retry "
                f"(with the same {admission.IDEMPOTENCY_HEADER})",
                retry_after_s=1,
            ) from None
        log.warning("job=%s written, though its transaction's answer was lost", job_id)
    log.info("job=%s pipeline=%s accepted n=%d", job_id, pipeline.name, len(parsed.inputs))
    return Accepted(view, body)
