"""Writing an accepted job: its place in the backlog (admission), then the job, its items and
its Idempotency-Key's record in one transaction (services/api/routers/submit.py calls it)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from redis.exceptions import RedisError, WatchError

from services.api import admission, drain
from services.api.auth import caller_of
from services.api.cancel import cancel
from services.api.inputs import ParsedJob
from services.api.redis_memory import transaction
from services.api.replication import unconfirmed
from services.api.views import strict_json
from shared import redis_conn
from shared.errors import Unavailable
from shared.job_record import JobRecord
from shared.jobs import encode_inputs, kept_bytes, queue_new_job, stored_bytes
from shared.messages import JobView, now_ms
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
            stored_bytes(encoded, parsed.blobs) + kept_bytes(kept),
            settings.max_backlog_bytes,
            rates.rate(drain.BYTES),
        )
        grant = await admission.admit(
            client, pipeline.name, len(parsed.inputs), settings.max_backlog, rates.rate(pipeline.name), budget
        )
        owner = caller_of(request)
        accepted, seen = await _write_job(
            client, settings, pipeline, parsed, job_id, grant, claim, encoded, owner, kept
        )
    except BaseException:
        # Nothing was written (or we cannot tell): give the key and the grant back, best effort;
        # both lapse by themselves if Redis is not there to hear it.
        if claim is not None:
            await _quietly(admission.give_back(client, claim))
        if grant is not None:
            await _quietly(admission.drop_grant(client, pipeline.name, grant))
        raise
    if not seen.confirmed:  # written, but a failover could still lose it (services/api/replication.py)
        await _unconfirmed(client, settings, job_id, claim, seen)
    return accepted


async def _unconfirmed(
    client: Any, settings: Any, job_id: str, claim: admission.Claim | None, seen: redis_conn.Replicated
) -> None:
    """503 for a job written but not confirmed on the replicas. With an Idempotency-Key it stays
    (its key's retry answers 202 once confirmed); without one it is canceled (no retry can find it)."""
    log.warning("job=%s not confirmed on the replicas: %s", job_id, seen.describe())
    if claim is not None:
        raise unconfirmed(
            f"job {job_id} is written",
            seen,
            f"retry with the same {admission.IDEMPOTENCY_HEADER}: 202 once it is",
        )
    try:
        await cancel(client, settings, job_id)
        outcome = "so it is canceled"
    except (RedisError, OSError) as exc:
        log.warning("job=%s: could not cancel it: %s", job_id, exc)
        outcome = "and canceling it failed (it may run)"
    raise unconfirmed(f"job {job_id} was written", seen, f"{outcome}; submit it again")


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
) -> tuple[Accepted, redis_conn.Replicated]:
    """Write the job (and the Idempotency-Key's final record) in one transaction, then WAIT for
    the replicas (DLPIPE_REDIS_MIN_REPLICAS); its 202 body, rendered first: a job whose answer
    cannot be rendered is refused, not written."""
    created = now_ms()
    record = JobRecord.new(
        id=job_id,
        pipeline=pipeline.name,
        created_ms=created,
        total=len(parsed.inputs),
        priority=parsed.priority,
        webhook=parsed.webhook,
        webhook_events=parsed.webhook_events,
        metadata=parsed.metadata,
        sources=parsed.sources or None,
        groups=parsed.groups,
        timeout_s=parsed.timeout_s,
    )
    view = record.to_view()  # the 202 body: the view of the very record the job hash gets
    body = strict_json(view)
    try:
        async with transaction(client) as pipe:  # its refusal (Redis full) reported at once
            seen = redis_conn.wait_after(pipe, settings)  # on EXEC's connection, right after it
            if claim is not None:
                await claim.fence(pipe)
            queue_new_job(
                pipe,
                record,
                pipeline=pipeline,
                inputs=parsed.inputs,
                ttl_s=settings.job_ttl_s,
                blobs=parsed.blobs or None,
                item_blobs=parsed.item_blobs or None,
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
    log.info(
        "job=%s pipeline=%s accepted n=%d priority=%s",
        job_id,
        pipeline.name,
        len(parsed.inputs),
        parsed.priority.value,
    )
    return Accepted(view, body), seen
