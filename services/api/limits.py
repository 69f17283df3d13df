"""A cap on request bodies, as pure ASGI middleware (it sees every request before any route).

A request whose `Content-Length` is over the cap gets 413 at once, unread. A body without
one (chunked) is counted as it arrives: the moment it passes the cap, reading stops and the
answer is 413, so no route ever holds more than the cap of one request in memory.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)


class BodyTooLarge(Exception):
    """Raised from `receive` when a body passes the cap; the middleware answers 413."""


def _payload(max_bytes: int) -> bytes:
    detail = f"request body larger than {max_bytes} bytes (DLPIPE_MAX_BODY_BYTES)"
    return json.dumps({"detail": detail, "field": "body"}).encode()


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _refuse(self, scope: Scope, send: Send) -> None:
        log.warning("%s %s: body over %d bytes: 413", scope.get("method"), scope.get("path"), self.max_bytes)
        body = _payload(self.max_bytes)
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, send)
            return
        seen = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge()
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except BodyTooLarge:
            if started:  # pragma: no cover - no route answers before reading its body
                raise
            await self._refuse(scope, send)


def _content_length(scope: Scope) -> int | None:
    headers: Any = scope.get("headers") or []
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
