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

from services.api import admission, formats
from services.api.auth import caller_of
from services.api.deps import PipelineDep, RedisDep, SettingsDep, WaitersDep
from services.api.errors import UnsupportedMediaType
from services.api.inputs import Limits, ParsedJob, parse_form, parse_json_body
from services.api.inputs.jsonbody import read_json_body
from services.api.inputs.multipart import read_form
from services.api.job_writer import Accepted, admit_and_write
from services.api.replication import confirm_replay
from services.api.routers.jobs import read_job
from services.api.schemas import ErrorBody
from services.api.views import job_response
from services.api.waiters import Watch, parse_prefer_wait
from shared.errors import NotFound, shown
from shared.messages import JobView
from shared.pipeline_spec import InputKind, PipelineSpec
from shared.settings import Settings

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
    "fail as `expired`. `priority` (optional: `high`, `normal`, `low`; default `normal`) puts the "
    "job's items ahead of lower priorities' at every stage, while those keep a guaranteed share. "
    "An `Idempotency-Key` header makes retries safe: the same key with the same "
    "request answers the first job again (202, same id and body, `Idempotent-Replayed: true`), with "
    "another request 422. While the pipeline's backlog is at `DLPIPE_MAX_BACKLOG` items, or the jobs "
    "not finished hold `DLPIPE_MAX_BACKLOG_BYTES` of inputs, new jobs get 429 with `Retry-After`.\n\n"
    "`Prefer: wait=N` (RFC 7240) asks to wait up to N seconds (at most `DLPIPE_MAX_WAIT_S`) for the "
    "job to end: ended in time, the answer is 200 with the final job (outputs and all); else it is "
    "the usual 202 once the time is up. The job runs the same either way."
)


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def _read_form_job(request: Request, pipeline: PipelineSpec, limits: Limits, digest: bool) -> ParsedJob:
    form = await read_form(request, limits)
    try:
        return await parse_form(form, pipeline, limits, digest=digest)
    finally:
        await form.close()


async def _read_job(request: Request, pipeline: PipelineSpec, settings: Settings, digest: bool) -> ParsedJob:
    """The request's job, JSON or multipart; with `digest`, its fingerprint too."""
    limits = Limits(
        max_inputs=settings.max_inputs_per_job,
        max_input_bytes=settings.max_input_bytes,
        data_root=settings.data_root,
        webhook_allow_private=settings.webhook_allow_private,
        max_timeout_s=settings.job_ttl_s,
    )
    media_type = _media_type(request)
    if media_type == "application/json" or media_type.endswith("+json"):
        raw = await read_json_body(request, settings.max_json_body_bytes, settings.max_json_values)
        if len(raw) <= INLINE_PARSE_BYTES and pipeline.input is InputKind.text:
            return parse_json_body(raw, pipeline, limits, digest=digest)  # microseconds: a thread costs more
        # large bodies take a while to parse; `path` inputs touch the file system
        return await run_in_threadpool(lambda: parse_json_body(raw, pipeline, limits, digest=digest))
    if media_type == "multipart/form-data":
        return await _read_form_job(request, pipeline, limits, digest)
    raise UnsupportedMediaType(
        f"content-type {shown(media_type or '(none)')} is not accepted: send application/json "
        "or multipart/form-data"
    )


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
    pipeline: PipelineDep,
    settings: SettingsDep,
    client: RedisDep,
    waiters: WaitersDep,
) -> Response:
    idempotency_key = request.headers.get(admission.IDEMPOTENCY_HEADER)
    if idempotency_key is not None:
        admission.check_key(idempotency_key)
    parsed = await _read_job(request, pipeline, settings, digest=idempotency_key is not None)
    job_id = uuid.uuid4().hex
    claim: admission.Claim | None = None
    if idempotency_key is not None:
        assert parsed.digest is not None
        mark = admission.fingerprint(pipeline.name, _media_type(request), parsed.digest)
        held = await admission.claim(client, caller_of(request), idempotency_key, mark, job_id)
        if isinstance(held, admission.Replay):
            await confirm_replay(client, settings, held.redis_key, held.job_id)
            log.info("job=%s replayed for its Idempotency-Key", held.job_id)
            return JSONResponse(
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
        accepted = await admit_and_write(request, client, settings, pipeline, parsed, job_id, claim)
        location = {"Location": f"/v1/jobs/{job_id}"}
        if watch is None or wait_s is None:
            return Response(accepted.body, 202, headers=location, media_type="application/json")
        return await _when_final(watch, client, accepted, wait_s, location)


async def _when_final(
    watch: Watch, client: Any, accepted: Accepted, wait_s: float, location: dict[str, str]
) -> Response:
    """`Prefer: wait`: the final job (200) if it ends within `wait_s`, else the job as it is (202)."""
    view = accepted.view
    try:
        final = await watch.until_final(wait_s, lambda: read_job(client, view.id), current=view)
    except (RedisError, OSError, NotFound) as exc:  # the job is accepted: say so, as without waiting
        log.warning("job=%s accepted; waiting for its end failed: %s", view.id, exc)
        return Response(accepted.body, 202, headers=location, media_type="application/json")
    if not final.status.is_final:
        return job_response(final, 202, location)  # as without the preference, the job as it is now
    return job_response(final, 200, {**location, "Preference-Applied": f"wait={wait_s:g}"})
