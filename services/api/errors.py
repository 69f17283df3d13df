"""The one place errors become HTTP answers: {"detail": <message>, "field": <field or null>}.

shared.errors.NotFound -> 404, InvalidRequest -> 422 (naming the field), Conflict -> 409,
PayloadTooLarge -> 413, UnsupportedMediaType -> 415, TimedOut -> 504, Unavailable and Redis connection/timeout
errors -> 503, Redis out of memory (a write refused at `maxmemory` under noeviction) -> 503,
FastAPI's own validation errors -> 422. A client gone before its body was read (or cut for sending
it too slowly: services/api/connections.py) is no bug: logged, and nothing is sent. Anything else
is a bug: logged with its traceback and answered 500 without one (InternalErrors), on a connection
that stays usable. A detail never runs past MAX_DETAIL_CHARS, whatever a client sent to be quoted.

Out of memory: Redis answers `OOM command not allowed when used memory > 'maxmemory'` (redis-py's
OutOfMemoryError, the code taken off); a script's refused write comes from 6.2 (the bundled
redis-server) as a plain ResponseError with those words inside (`Error running script ...`):
both are matched. Nothing of a refused request is stored: Redis discards a MULTI with a refused
command whole, and refuses a script only at its first write that may add memory, before it has
written anything.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.errors import (
    Conflict,
    DlpipeError,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    TimedOut,
    Unavailable,
    cut,
)
from shared.redis_full import is_out_of_memory

log = logging.getLogger(__name__)

MAX_DETAIL_CHARS = 2000  # past this, a detail is cut (a client's value quoted in it, usually)


class UnsupportedMediaType(DlpipeError):
    """A request body of a content type the endpoint does not take (HTTP 415)."""


_LOCATIONS = {"body", "path", "query", "header", "cookie"}


def error_response(status: int, detail: str, field: str | None = None, **headers: str) -> JSONResponse:
    shown_field = None if field is None else cut(field, 200)
    body = {"detail": cut(detail, MAX_DETAIL_CHARS), "field": shown_field}
    return JSONResponse(body, status_code=status, headers=headers or None)


def format_loc(loc: Sequence[Any], prefix: str = "") -> str:
    """('body', 'inputs', 2, 'image_base64') -> 'inputs[2].image_base64'."""
    parts = list(loc)
    if parts and parts[0] in _LOCATIONS:
        parts = parts[1:]
    out = prefix
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "body"


def describe_validation_errors(errors: Iterable[dict[str, Any]], prefix: str = "") -> tuple[str, str]:
    """Pydantic errors as one readable message, and the first field they name."""
    lines: list[str] = []
    first = ""
    for err in errors:
        where = format_loc(err.get("loc", ()), prefix)
        first = first or where
        message = str(err.get("msg", "invalid"))
        lines.append(f"{where}: {message[:1].lower()}{message[1:]}")
    return "; ".join(lines) or "invalid request", first or prefix or "body"


async def _not_found(request: Request, exc: Exception) -> JSONResponse:
    return error_response(404, str(exc))


async def _conflict(request: Request, exc: Exception) -> JSONResponse:
    return error_response(409, str(exc))


async def _too_large(request: Request, exc: Exception) -> JSONResponse:
    field = exc.field if isinstance(exc, PayloadTooLarge) else "body"
    return error_response(413, str(exc), field)


async def _unsupported(request: Request, exc: Exception) -> JSONResponse:
    return error_response(415, str(exc), "content-type")


async def _invalid(request: Request, exc: Exception) -> JSONResponse:
    field = exc.field if isinstance(exc, InvalidRequest) else None
    return error_response(422, str(exc), field)


async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.warning("%s %s: unavailable: %s", request.method, request.url.path, exc)
    retry_after = exc.retry_after_s if isinstance(exc, Unavailable) else 5
    return error_response(503, str(exc) or "service unavailable", **{"Retry-After": str(retry_after)})


async def _timed_out(request: Request, exc: Exception) -> JSONResponse:
    return error_response(504, str(exc))


async def _redis_down(request: Request, exc: Exception) -> JSONResponse:
    log.warning("%s %s: redis unavailable: %s", request.method, request.url.path, exc)
    return error_response(503, "redis unavailable", **{"Retry-After": "5"})


async def _client_gone(request: Request, exc: Exception) -> JSONResponse:
    log.info("%s %s: the client went away before its request was read", request.method, request.url.path)
    return error_response(400, "client disconnected")  # never sent: the connection is gone


OUT_OF_MEMORY_RETRY_S = 5
OUT_OF_MEMORY_DETAIL = (
    "Redis is full (its maxmemory is reached and it evicts nothing): the request was refused and "
    f"nothing of it was stored; retry after {OUT_OF_MEMORY_RETRY_S} s, as finished jobs free "
    "memory. Operators: raise Redis's maxmemory (DLPIPE_REDIS_MAXMEMORY for `dlpipe up`) or "
    "lower DLPIPE_MAX_BACKLOG_BYTES"
)


# Refusals of a Redis in a failover (a primary just demoted to replica: READONLY; a replica
# whose primary is gone: MASTERDOWN; min-replicas-to-write unmet: NOREPLICAS): the next try
# finds the new primary (shared/redis_conn.py), so they are a 503 to retry, not a bug. A command
# says the code first (`READONLY You can't write ...`); a script's refused redis.call() comes
# wrapped, the code after a `-` (`Error running script (call to f_...): @user_script:18:
# @user_script: 18: -READONLY You can't write ...`, Redis 7.0 and 6.2).
FAILING_OVER = ("READONLY", "MASTERDOWN", "NOREPLICAS", "TRYAGAIN", "LOADING")
FAILING_OVER_DETAIL = "Redis is failing over (the primary changed): retry after Retry-After"
_FAILING_OVER_CODE = re.compile(rf"(?:^|: -)(?:{'|'.join(FAILING_OVER)})\b")


def is_failing_over(exc: Exception) -> bool:
    return isinstance(exc, ReadOnlyError) or bool(_FAILING_OVER_CODE.search(str(exc).lstrip()))


async def _redis_refused(request: Request, exc: Exception) -> JSONResponse:
    if is_failing_over(exc):
        log.warning("%s %s: redis refused during a failover: %s", request.method, request.url.path, exc)
        return error_response(503, FAILING_OVER_DETAIL, **{"Retry-After": "1"})
    if not is_out_of_memory(exc):
        raise exc  # any other refusal is a bug: on to the 500 handler, as before
    log.warning(
        "%s %s: redis is out of memory (maxmemory): a write was refused", request.method, request.url.path
    )
    return error_response(503, OUT_OF_MEMORY_DETAIL, **{"Retry-After": str(OUT_OF_MEMORY_RETRY_S)})


async def _request_validation(request: Request, exc: Exception) -> JSONResponse:
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    message, field = describe_validation_errors(errors)
    return error_response(422, message, field)


async def _http(request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, HTTPException):  # pragma: no cover - registered for HTTPException only
        raise exc
    return error_response(exc.status_code, str(exc.detail), **(exc.headers or {}))


class InternalErrors:
    """The last word on a bug: a 500 without a traceback, and the connection kept.

    Starlette's own last handler (ServerErrorMiddleware) answers, then raises the error on to the
    server, and uvicorn then closes the connection: a client's next request on it (a pooled
    keep-alive connection) got a reset. This middleware sits inside it and answers without raising.
    An error after the answer had started can only be logged; the server then closes the connection,
    the one honest end for a half-sent response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = ended = False

        async def tracked(message: Message) -> None:
            nonlocal started, ended
            started = started or message["type"] == "http.response.start"
            ended = ended or (message["type"] == "http.response.body" and not message.get("more_body"))
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:
            log.error("%s %s: unexpected error", scope.get("method"), scope.get("path"), exc_info=exc)
            if started and not ended:
                raise
            if not started:
                await error_response(500, "internal error")(scope, receive, send)


def install_error_handlers(app: FastAPI) -> None:
    """Map every error to its answer; call it after the other middleware is added (InternalErrors
    must wrap them all)."""
    app.add_middleware(InternalErrors)
    app.add_exception_handler(NotFound, _not_found)
    app.add_exception_handler(InvalidRequest, _invalid)
    app.add_exception_handler(Conflict, _conflict)
    app.add_exception_handler(PayloadTooLarge, _too_large)
    app.add_exception_handler(UnsupportedMediaType, _unsupported)
    app.add_exception_handler(Unavailable, _unavailable)
    app.add_exception_handler(TimedOut, _timed_out)
    app.add_exception_handler(RedisConnectionError, _redis_down)
    app.add_exception_handler(RedisTimeoutError, _redis_down)
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(ResponseError, _redis_refused)  # OutOfMemoryError is one
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(HTTPException, _http)
