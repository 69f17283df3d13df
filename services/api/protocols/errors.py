"""Errors on a protocol's routes, in that protocol's own shape.

dlpipe's errors become HTTP answers in one place (services/api/errors.py, `{"detail", "field"}`).
A protocol's routes (`protocol_route(shape)` as their router's `route_class`) run those same
handlers and re-shape only the body: the status, the message and the headers (`Retry-After`,
`WWW-Authenticate`) stay as they are, except that 422 becomes 400, what both protocols answer a
bad request with. Everything the route runs is covered: the API-key check, the body's validation,
the route itself; what happens outside routing (an unknown path, the body-size middleware's 413)
keeps dlpipe's shape. An error no handler knows (a bug) goes on to the 500 handler.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.responses import Response

# (status, message, field or None) -> the protocol's error body
ErrorShape = Callable[[int, str, str | None], dict[str, Any]]
Handler = Callable[[Request, Exception], Awaitable[Response]]

_KEPT_HEADERS = ("retry-after", "www-authenticate")


def _handler_for(request: Request, exc: Exception) -> Handler | None:
    handlers: dict[Any, Handler] = request.app.exception_handlers
    for cls in type(exc).__mro__:
        if cls in handlers:
            return handlers[cls]
    return None


def reshape(answer: Response, shape: ErrorShape) -> Response:
    """A dlpipe error answer ({"detail", "field"}) as the protocol's."""
    try:
        body = json.loads(bytes(answer.body))
    except ValueError:
        body = {}
    status = 400 if answer.status_code == 422 else answer.status_code
    headers = {k: v for k, v in answer.headers.items() if k.lower() in _KEPT_HEADERS}
    message = str(body.get("detail") or "error")
    field = body.get("field")
    return JSONResponse(shape(status, message, field if isinstance(field, str) else None), status, headers)


def protocol_route(shape: ErrorShape) -> type[APIRoute]:
    """A route class whose errors come out in `shape`."""

    class ProtocolRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
            handle = super().get_route_handler()

            async def shaped(request: Request) -> Response:
                try:
                    return await handle(request)
                except Exception as exc:
                    handler = _handler_for(request, exc)
                    if handler is None:
                        raise
                    return reshape(await handler(request, exc), shape)

            return shaped

    return ProtocolRoute


def openai_error(status: int, message: str, field: str | None) -> dict[str, Any]:
    """OpenAI's error object: {"error": {"message", "type", "param", "code"}}."""
    if status == 429:
        kind, code = "rate_limit_error", "rate_limit_exceeded"
    elif status >= 500:
        kind, code = "server_error", {503: "service_unavailable", 504: "timeout"}.get(status)
    else:
        kind = "invalid_request_error"  # 401 too, as OpenAI answers a wrong key
        code = {401: "invalid_api_key", 404: "model_not_found", 413: "request_too_large"}.get(status)
    return {"error": {"message": message, "type": kind, "param": field, "code": code}}


def oip_error(status: int, message: str, field: str | None) -> dict[str, Any]:
    """The Open Inference Protocol's error object: {"error": "<message>"}."""
    return {"error": message}
