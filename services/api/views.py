"""A job as an HTTP answer: rendered once, by pydantic, and never a 500 for a stored record.

What the API accepts always renders (services/api/inputs checks it before a job is written,
and `strict_json` renders the 202 body before the write). But a record written before a rule
existed, or a stage's result JSON cannot hold (a lone surrogate, nesting past the serializer's
limit), must not turn every read of its job into a 500: `job_response` leaves out the parts that
cannot be rendered (metadata becomes null; such an output keeps its index and status, its result
becomes null and its error says why), logs it, and shows the rest.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi.responses import Response
from pydantic_core import PydanticSerializationError, to_json

from shared.errors import InvalidRequest
from shared.messages import ItemOutput, JobView

log = logging.getLogger(__name__)

_RENDER_ERRORS = (PydanticSerializationError, ValueError, RecursionError, UnicodeError)
UNRENDERABLE = "its result cannot be rendered as JSON"


def strict_json(view: JobView) -> bytes:
    """The view as JSON, or InvalidRequest: for a job about to be written, whose answer must render."""
    try:
        return view.__pydantic_serializer__.to_json(view)
    except _RENDER_ERRORS as exc:
        raise InvalidRequest(f"body: the job cannot be rendered as JSON ({exc})", field="body") from None


def job_json(view: JobView) -> bytes:
    """The view as JSON; what cannot be rendered left out (see the module's docstring)."""
    try:
        return view.__pydantic_serializer__.to_json(view)
    except _RENDER_ERRORS as exc:
        log.error("job=%s stage=api its record cannot be rendered whole (%s): parts left out", view.id, exc)
    shown = _renderable_parts(view)
    try:
        return shown.__pydantic_serializer__.to_json(shown)
    except _RENDER_ERRORS as exc:  # a field no one writes by hand: the job's bare state
        log.error("job=%s stage=api not even its parts render (%s)", view.id, exc)
        bare = JobView(
            id=view.id,
            pipeline=view.pipeline,
            status=view.status,
            progress=view.progress,
            created_at=view.created_at,
            completed_at=view.completed_at,
            error=UNRENDERABLE,
        )
        return bare.__pydantic_serializer__.to_json(bare)


def job_response(view: JobView, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(job_json(view), status_code=status_code, headers=headers, media_type="application/json")


def _renders(value: Any) -> bool:
    try:
        to_json(value)
    except _RENDER_ERRORS:
        return False
    return True


def _renderable_parts(view: JobView) -> JobView:
    outputs = [
        output
        if _renders(output)
        else ItemOutput(index=output.index, status=output.status, error=UNRENDERABLE)
        for output in view.outputs
    ]
    metadata = view.metadata if _renders(view.metadata) else None
    error = view.error if _renders(view.error) else UNRENDERABLE
    webhook = view.webhook if _renders(view.webhook) else None
    return view.model_copy(
        update={"outputs": outputs, "metadata": metadata, "error": error, "webhook": webhook}
    )
