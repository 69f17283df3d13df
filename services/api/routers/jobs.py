"""Submit jobs and read them back. The API only writes the job and queues its items."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError, WatchError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException

from services.api import admission
from services.api.auth import caller_of
from services.api.deps import JobIdPath, PipelineDep, RedisDep, SettingsDep, WaitersDep, check_job_id
from services.api.errors import UnsupportedMediaType
from services.api.inputs import (
    MAX_METADATA_BYTES,
    MULTIPART_FILES_FIELD,
    Limits,
    ParsedJob,
    invalid,
    parse_form,
    parse_json_body,
)
from services.api.routers.webhooks import with_delivery_state
from services.api.schemas import ErrorBody, multipart_job_schema
from services.api.waiters import parse_prefer_wait
from shared import keys
from shared.errors import NotFound
from shared.jobs import deadline_ms, drop_items, groups_record, queue_new_job
from shared.messages import JobStatus, JobView, job_view_from_redis, now_ms
from shared.pipeline_spec import InputKind, PipelineSpec
from workers import scripts

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", tags=["jobs"])

INLINE_PARSE_BYTES = 64 * 1024  # a text job's body up to this is parsed on the event loop

_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "No such pipeline or job."},
    422: {"model": ErrorBody, "description": "The request is not valid; `field` names what."},
    503: {"model": ErrorBody, "description": "Redis is unavailable."},
}
_SUBMIT_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    409: {"model": ErrorBody, "description": "A request with this `Idempotency-Key` is still in progress."},
    413: {"model": ErrorBody, "description": "The body is larger than `DLPIPE_MAX_BODY_BYTES`."},
    415: {"model": ErrorBody, "description": "Neither JSON nor multipart/form-data."},
    429: {
        "model": ErrorBody,
        "description": "The pipeline's backlog is at `DLPIPE_MAX_BACKLOG`: retry after `Retry-After` s.",
        "headers": {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}},
    },
}

_REQUEST_BODY = {
    "required": True,
    "description": "The inputs, as JSON (base64) or as multipart/form-data file uploads.",
    "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/JobRequest"}},
        "multipart/form-data": {"schema": multipart_job_schema()},
    },
}


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def _read_form_job(request: Request, pipeline: PipelineSpec, limits: Limits) -> ParsedJob:
    try:
        form = await request.form(
            max_files=limits.max_inputs + 1, max_fields=16, max_part_size=MAX_METADATA_BYTES + 1024
        )
    except (MultiPartException, HTTPException) as exc:
        message = getattr(exc, "message", None) or getattr(exc, "detail", None) or str(exc)
        if "Too many files" in message:
            raise invalid(MULTIPART_FILES_FIELD, f"at most {limits.max_inputs} inputs per job") from None
        raise invalid("body", f"malformed multipart body: {message}") from None
    try:
        return await parse_form(form, pipeline, limits)
    finally:
        await form.close()


@router.post(
    "/pipelines/{name}/jobs",
    status_code=202,
    response_model=JobView,
    summary="Submit a job",
    description=(
        "Queue one job of one or more inputs on a pipeline and answer at once (202) with the job "
        "(status `queued`, every output `pending`) and its URL in `Location`. Poll "
        "`GET /v1/jobs/{id}` or pass a `webhook` to be called when it finishes.\n\n"
        "Send either `application/json` (`inputs`: a list of objects whose fields depend on the "
        "pipeline's input kind: for `image` exactly one of `image_base64`, `image_url` (fetched by "
        "the workers) or `path` (a file or folder under the server's `DLPIPE_DATA_ROOT`; a folder "
        "means one input per image in it); `text` for `text`; for `video` `video_path` (a video "
        "file under the data root) with optional `interval` and `fps`) or "
        "`multipart/form-data` (one `files` part per input, a UTF-8 text file for `text`; "
        "optional `webhook` and `metadata` (JSON text) fields, and for `video` `options` (JSON "
        "text: `interval`, `fps`, for every file)). Each output's `source` names its file, path "
        "or URL. A video runs as one item per frame (progress counts frames) and has one output: "
        "`{\"frames\": {\"0.500\": <that frame's result>, ...}, \"errors\": {...}}`.\n\n"
        "`timeout_s` (optional) sets a deadline: items not finished that many seconds after "
        "submission fail as `expired`. An `Idempotency-Key` header makes retries safe: the same "
        "key with the same request answers the first job again (202, same id and body, "
        "`Idempotent-Replayed: true`), with another request 422. While the pipeline's backlog is "
        "at `DLPIPE_MAX_BACKLOG` items, new jobs get 429 with `Retry-After`.\n\n"
        "`Prefer: wait=N` (RFC 7240) asks to wait up to N seconds (at most `DLPIPE_MAX_WAIT_S`) for "
        "the job to end: ended in time, the answer is 200 with the final job (outputs and all); "
        "else it is the usual 202 once the time is up. The job runs the same either way."
    ),
    response_description="The queued job.",
    responses={
        **_SUBMIT_ERRORS,
        202: {"headers": {"Location": {"description": "URL of the job", "schema": {"type": "string"}}}},
        200: {
            "model": JobView,
            "description": "With `Prefer: wait=N`: the job ended within N seconds; its final state.",
            "headers": {
                "Location": {"description": "URL of the job", "schema": {"type": "string"}},
                "Preference-Applied": {"description": "`wait=N`", "schema": {"type": "string"}},
            },
        },
    },
    openapi_extra={
        "requestBody": _REQUEST_BODY,
        "parameters": [
            {
                "name": admission.IDEMPOTENCY_HEADER,
                "in": "header",
                "required": False,
                "description": (
                    "Any unique string (1-255 printable ASCII characters, e.g. a UUID) that makes "
                    "the submit safe to retry: kept DLPIPE_IDEMPOTENCY_TTL_S."
                ),
                "schema": {"type": "string", "maxLength": 255},
            },
            {
                "name": "Prefer",
                "in": "header",
                "required": False,
                "description": "`wait=N`: wait up to N seconds for the job to end (then 200 with it).",
                "schema": {"type": "string", "examples": ["wait=30"]},
            },
        ],
    },
)
async def create_job(
    request: Request,
    response: Response,
    pipeline: PipelineDep,
    settings: SettingsDep,
    client: RedisDep,
    waiters: WaitersDep,
) -> JobView:
    limits = Limits(
        max_inputs=settings.max_inputs_per_job,
        max_input_bytes=settings.max_input_bytes,
        data_root=settings.data_root,
        webhook_allow_private=settings.webhook_allow_private,
        max_timeout_s=settings.job_ttl_s,
    )
    idempotency_key = request.headers.get(admission.IDEMPOTENCY_HEADER)
    body = b""
    if idempotency_key is not None:
        admission.check_key(idempotency_key)
        body = await request.body()  # the fingerprint's; kept for the parsers (JSON or multipart)
    media_type = _media_type(request)
    if media_type == "application/json" or media_type.endswith("+json"):
        raw = await request.body()
        if len(raw) <= INLINE_PARSE_BYTES and pipeline.input is InputKind.text:
            parsed = parse_json_body(raw, pipeline, limits)  # microseconds: a thread would cost more
        else:  # large bodies take a while to parse; `path` inputs touch the file system
            parsed = await run_in_threadpool(parse_json_body, raw, pipeline, limits)
    elif media_type == "multipart/form-data":
        parsed = await _read_form_job(request, pipeline, limits)
    else:
        raise UnsupportedMediaType(
            f"content-type {media_type or '(none)'!r} is not accepted: send application/json "
            "or multipart/form-data"
        )
    job_id = uuid.uuid4().hex
    claim: admission.Claim | None = None
    if idempotency_key is not None:
        mark = admission.fingerprint(pipeline.name, request.headers.get("content-type", ""), body)
        held = await admission.claim(client, caller_of(request), idempotency_key, mark, job_id)
        if isinstance(held, admission.Replay):
            log.info("job=%s replayed for its Idempotency-Key", held.job_id)
            return JSONResponse(  # type: ignore[return-value]
                held.response,
                status_code=202,
                headers={"Location": f"/v1/jobs/{held.job_id}", "Idempotent-Replayed": "true"},
            )
        claim = held
    grant: str | None = None
    try:
        rate = request.app.state.drain_rates.rate(pipeline.name)
        grant = await admission.admit(client, pipeline.name, len(parsed.inputs), settings.max_backlog, rate)
        view = await _write_job(response, client, settings, pipeline, parsed, job_id, grant, claim)
    except BaseException:
        # Nothing was written (or we cannot tell): give the key and the grant back, best effort;
        # both lapse by themselves if Redis is not there to hear it.
        if claim is not None:
            await _quietly(admission.release(client, claim))
        if grant is not None:
            await _quietly(admission.drop_grant(client, pipeline.name, grant))
        raise
    wait_s = parse_prefer_wait(request.headers.get("prefer"), settings.max_wait_s)
    if wait_s is None:
        return view
    try:
        final = await waiters.read_until_final(job_id, wait_s, lambda: read_job(client, job_id))
    except (RedisError, OSError, NotFound) as exc:  # the job is accepted: say so, as without waiting
        log.warning("job=%s accepted; waiting for its end failed: %s", job_id, exc)
        return view
    if not final.status.is_final:
        return final  # 202, as without the preference, with the job as it is now
    return JSONResponse(  # type: ignore[return-value]
        final.model_dump(mode="json"),
        status_code=200,
        headers={"Location": f"/v1/jobs/{job_id}", "Preference-Applied": f"wait={wait_s:g}"},
    )


async def _quietly(step: Any) -> None:
    try:
        await step
    except Exception as exc:  # the original error is what the client must see
        log.warning("cleanup after a failed submit failed: %s", exc)


async def _write_job(
    response: Response,
    client: Any,
    settings: Any,
    pipeline: PipelineSpec,
    parsed: ParsedJob,
    job_id: str,
    grant: str,
    claim: admission.Claim | None,
) -> JobView:
    """Write the job (and the Idempotency-Key's final record) in one transaction; its 202 body."""
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
    async with client.pipeline(transaction=True) as pipe:
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
        )
        if claim is not None:
            claim.record(pipe, view.model_dump(mode="json"), settings.idempotency_ttl_s)
        try:
            await pipe.execute()
        except WatchError:
            assert claim is not None  # only a claim's key is watched
            raise claim.taken_over() from None
    log.info("job=%s pipeline=%s accepted n=%d", job_id, pipeline.name, len(parsed.inputs))
    response.headers["Location"] = f"/v1/jobs/{job_id}"
    return view


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
    job_id: JobIdPath,
    wait_s: Annotated[
        float,
        Query(ge=0, le=3600, description="Wait up to this many seconds for the job to end (0: answer at once)."),
    ] = 0,
) -> JobView:
    check_job_id(job_id)
    view = await read_job(client, job_id)
    wait_s = min(wait_s, settings.max_wait_s)
    if view.status.is_final or wait_s <= 0:
        return view
    return await waiters.read_until_final(job_id, wait_s, lambda: read_job(client, job_id))


async def read_job(client: Any, job_id: str) -> JobView:
    """The job as GET shows it (with its webhook's delivery state); NotFound if there is none."""
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
    name = _text(pipeline)
    outcome, status = await script(
        keys=[
            keys.job(job_id),
            keys.job_outputs(job_id),
            keys.EVENTS,
            keys.backlog(name),
            keys.deadlines(name),
            keys.METRICS,  # counts the job and its unfinished items as canceled
        ],
        args=[now_ms(), settings.job_ttl_s, job_id],
    )
    if int(outcome) == -1:
        raise NotFound(f"no job {job_id!r}")
    if int(outcome) == 0:
        raise HTTPException(409, f"job {job_id!r} has already ended: {_text(status)}")
    # The inputs of items that will never run: free them now rather than at the job's TTL.
    async with client.pipeline(transaction=False) as pipe:
        drop_items(pipe, job_id, int(total or 0))
        await pipe.execute()
    log.info("job=%s canceled", job_id)
    return await read_job(client, job_id)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
