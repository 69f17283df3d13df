"""Submit a job: `POST /v1/pipelines/{name}/jobs`, one route for every pipeline. The API only
checks the request, writes the job and queues its items.

The OpenAPI document shows one operation per configured pipeline instead of this route, each
with the request schemas of that pipeline's input kind (services/api/openapi.py); the route's
own description and responses are the part they share.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException

from services.api import admission, formats
from services.api.auth import caller_of
from services.api.deps import PipelineDep, RedisDep, SettingsDep, WaitersDep
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
from services.api.job_writer import admit_and_write
from services.api.routers.jobs import read_job
from services.api.schemas import ErrorBody
from services.api.waiters import Watch, parse_prefer_wait
from shared.errors import NotFound
from shared.messages import JobView
from shared.pipeline_spec import InputKind, PipelineSpec

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", tags=["jobs"])

SUBMIT_PATH = "/v1/pipelines/{name}/jobs"
INLINE_PARSE_BYTES = 64 * 1024  # a text job's body up to this is parsed on the event loop

SUBMIT_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "No such pipeline."},
    409: {"model": ErrorBody, "description": "A request with this `Idempotency-Key` is still in progress."},
    413: {"model": ErrorBody, "description": "The body is larger than `DLPIPE_MAX_BODY_BYTES`."},
    415: {"model": ErrorBody, "description": "Neither JSON nor multipart/form-data."},
    422: {
        "model": ErrorBody,
        "description": (
            "The request is not valid (`field` names what), or names data that does not work (a path "
            "with nothing there, an unreadable video, too many frames), or reuses an `Idempotency-Key` "
            "with another request."
        ),
    },
    429: {
        "model": ErrorBody,
        "description": (
            "The pipeline's backlog is at `DLPIPE_MAX_BACKLOG` items, or the jobs not finished hold "
            "`DLPIPE_MAX_BACKLOG_BYTES` of inputs: retry after `Retry-After` s."
        ),
        "headers": {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}},
    },
    503: {
        "model": ErrorBody,
        "description": "Redis is unavailable, or full (its maxmemory): retry after `Retry-After` s.",
        "headers": {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}},
    },
}

SUBMIT_DESCRIPTION = (
    "Queue one job of one or more inputs and answer at once (202) with the job (status `queued`, "
    "every output `pending`) and its URL in `Location`. Poll `GET /v1/jobs/{id}` or pass a "
    "`webhook` to be called when it finishes. Each output's `source` names its file, path or URL.\n\n"
    "`timeout_s` (optional) sets a deadline: items not finished that many seconds after submission "
    "fail as `expired`. An `Idempotency-Key` header makes retries safe: the same key with the same "
    "request answers the first job again (202, same id and body, `Idempotent-Replayed: true`), with "
    "another request 422. While the pipeline's backlog is at `DLPIPE_MAX_BACKLOG` items, or the jobs "
    "not finished hold `DLPIPE_MAX_BACKLOG_BYTES` of inputs, new jobs get 429 with `Retry-After`.\n\n"
    "`Prefer: wait=N` (RFC 7240) asks to wait up to N seconds (at most `DLPIPE_MAX_WAIT_S`) for the "
    "job to end: ended in time, the answer is 200 with the final job (outputs and all); else it is "
    "the usual 202 once the time is up. The job runs the same either way."
)


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
    description=SUBMIT_DESCRIPTION,
    response_description="The queued job.",
    responses={
        **SUBMIT_ERRORS,
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
        "parameters": [
            {
                "name": admission.IDEMPOTENCY_HEADER,
                "in": "header",
                "required": False,
                "description": (
                    "Any unique string (1-255 printable ASCII characters, e.g. a UUID) that makes "
                    "the submit safe to retry: kept DLPIPE_IDEMPOTENCY_TTL_S."
                ),
                "schema": {"type": "string", "pattern": formats.IDEMPOTENCY_KEY, "maxLength": 255},
            },
            {
                "name": "Prefer",
                "in": "header",
                "required": False,
                "description": (
                    "`wait=N`: wait up to N seconds for the job to end, then answer 200 with it (RFC "
                    "7240; other preferences are ignored)."
                ),
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
    wait_s = parse_prefer_wait(request.headers.get("prefer"), settings.max_wait_s)
    async with contextlib.AsyncExitStack() as stack:
        # Prefer: wait: watch for the job's end before it is written, so no end goes unseen and
        # no read is needed before the first wake-up.
        watch = None if wait_s is None else await stack.enter_async_context(waiters.watching(job_id))
        view = await admit_and_write(request, response, client, settings, pipeline, parsed, job_id, claim)
        if watch is None or wait_s is None:
            return view
        return await _when_final(watch, client, view, wait_s)


async def _when_final(watch: Watch, client: Any, view: JobView, wait_s: float) -> JobView:
    """`Prefer: wait`: the final job (200) if it ends within `wait_s`, else the job as it is (202)."""
    try:
        final = await watch.until_final(wait_s, lambda: read_job(client, view.id), current=view)
    except (RedisError, OSError, NotFound) as exc:  # the job is accepted: say so, as without waiting
        log.warning("job=%s accepted; waiting for its end failed: %s", view.id, exc)
        return view
    if not final.status.is_final:
        return final  # 202, as without the preference, with the job as it is now
    return JSONResponse(  # type: ignore[return-value]
        final.model_dump(mode="json"),
        status_code=200,
        headers={"Location": f"/v1/jobs/{view.id}", "Preference-Applied": f"wait={wait_s:g}"},
    )
