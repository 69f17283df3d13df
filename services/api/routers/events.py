"""A job's events as Server-Sent Events: `GET /v1/jobs/{id}/events` (services/api/sse.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from services.api.deps import OwnedJobId, RedisDep, SettingsDep
from services.api.schemas import ErrorBody
from services.api.sse import Session
from shared.errors import NotFound, shown

router = APIRouter(prefix="/v1", tags=["jobs"])

DESCRIPTION = """\
The job's events as they happen (`text/event-stream`), each with an `id:`, an `event:` and JSON
`data:`:

- `output`: an input's output the moment it ends (as in the job's `outputs`: `index`, `status`,
  `result` or `error`, `source`);
- `progress`: `{"done": ..., "total": ...}` items, after each batch of outputs;
- `completed`: the final job (as `GET /v1/jobs/{id}`); the stream ends after it.

A client that comes late first gets what it missed: every output so far, then the progress (or
`completed` at once if the job has ended). `Last-Event-ID` (or `last_event_id`) resumes after that
event; when those events are no longer kept, the client gets everything again (tell outputs apart
by `index`). A `: keep-alive` comment comes every `DLPIPE_SSE_KEEPALIVE_S` (15 s) of quiet. The
key may come as `?access_token=` (EventSource sends no headers). Streams end when the API stops.
"""


@router.get(
    "/jobs/{job_id}/events",
    summary="Follow a job's events (SSE)",
    description=DESCRIPTION,
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The event stream.",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        404: {"model": ErrorBody, "description": "No such job."},
        503: {"model": ErrorBody, "description": "Redis is unavailable."},
    },
)
async def job_events(
    request: Request,
    client: RedisDep,
    settings: SettingsDep,
    job_id: OwnedJobId,
    last_event_id: Annotated[
        str | None, Query(max_length=64, description="Resume after this event id (as `Last-Event-ID`).")
    ] = None,
    last_event_id_header: Annotated[
        str | None, Header(alias="Last-Event-ID", description="Resume after this event id.")
    ] = None,
) -> StreamingResponse:
    session = Session(
        client, request.app.state.job_events, job_id, request.app.state.stopping, settings.sse_keepalive_s
    )
    opened = await session.open(last_event_id_header or last_event_id)
    if opened is None:
        raise NotFound(f"no job {shown(job_id)}")
    return StreamingResponse(
        session.events(*opened),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
