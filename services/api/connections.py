"""The HTTP/1.1 protocol of every API connection: uvicorn's httptools protocol with limits on
what one client may hold (the rules: README's Security section; the numbers, from the settings,
and the answers: services/api/connection_limits.py).

Alone, uvicorn reads a head of any size (httptools joins a partial header in Python: a 60 MB
one stalled the event loop ~3 s), keeps silent and slow clients for ever (its keep-alive timer
runs only after a response), and closes at once after an early answer, so a client still
sending its body (urllib, after a 413) gets a reset. Here a connection is in one Phase; one
timer keeps the head's deadline (header_timeout_s from its first byte), the body's
(ConnectionLimits.body_due; stopped while the app, not the client, is slow to read) or the
linger's; uvicorn's keep-alive timer is the idle one, armed on a new connection too. The app's
own time (a long poll, `Prefer: wait`) counts against none. A close while the client may still
be sending lingers: the answer, a FIN, then what comes is read and dropped (bounded), so the
client reads the answer.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import logging
from collections.abc import Callable, Iterable
from typing import Any

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from services.api import shutdown
from services.api.connection_limits import ConnectionLimits, error_answer

log = logging.getLogger(__name__)


class Phase(enum.Enum):
    HEAD = "head"  # waiting for, or reading, a request line and headers
    BODY = "body"  # headers read, the body still arriving
    LINGER = "linger"  # answered for good: dropping what still comes, then closing
    CLOSED = "closed"


_OPEN = (Phase.HEAD, Phase.BODY)
_ENDING = (Phase.LINGER, Phase.CLOSED)


class _Refused(Exception):
    """Raised from a parser callback after a refusal: it stops httptools at once."""


class _CloseGuard:
    """The transport uvicorn's code holds: the real one, but close() asks the protocol, which
    closes at once or lingers (RequestResponseCycle.send closes the transport itself after a
    `Connection: close` answer, while the body may still be coming)."""

    def __init__(self, transport: asyncio.Transport, protocol: GuardedHttpToolsProtocol) -> None:
        self._transport = transport
        self._protocol = protocol

    def close(self) -> None:
        self._protocol.close_requested()

    def is_closing(self) -> bool:
        return self._protocol.phase in _ENDING or self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: ConnectionLimits,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits
        self.timeout_keep_alive = limits.idle_timeout_s  # type: ignore[assignment]  # the idle timer
        self.phase = Phase.HEAD
        self._raw: asyncio.Transport = None  # type: ignore[assignment]
        self._timer: asyncio.TimerHandle | None = None  # the head, body or linger deadline
        self._stalled = 0  # bytes parsed since the parser's last progress (see _feed)
        self._header_count = 0
        self._body_bytes = 0
        self._body_clock = (0.0, 0)  # when the body rule's clock started, and the bytes by then
        self._drain_left = 0  # bytes a linger may still drop
        self._stopping = False

    @classmethod
    def factory(cls, limits: ConnectionLimits) -> Callable[..., GuardedHttpToolsProtocol]:
        """What uvicorn's `http=` option takes; it pickles (several API processes get it)."""
        return functools.partial(cls, limits=limits)

    # -- the connection -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._raw = transport
        super().connection_made(_CloseGuard(transport, self))  # type: ignore[arg-type]
        if len(self.connections) > self.limits.max_connections:
            # Over the cap, linger only until its request is read: to hold no descriptor long.
            self._refuse(503, self.limits.too_many_connections(), None, [(b"retry-after", b"5")], drain=0)
            return
        self._arm_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        super().connection_lost(exc)

    def shutdown(self) -> None:
        shutdown.begin()  # event streams end now, not at the graceful shutdown's timeout
        self._stopping = True
        if self.phase in _ENDING:
            self._close_now()
        else:
            super().shutdown()

    def timeout_keep_alive_handler(self) -> None:
        """Silent for idle_timeout_s with no request in hand (or while lingering): close."""
        self._close_now()

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        if self.phase in _ENDING:
            self._drop(len(data))
            return
        if self.phase is Phase.HEAD and self._timer is None:
            self._timer = self.loop.call_later(self.limits.header_timeout_s, self._head_too_slow)
        try:
            self._feed(memoryview(data))
        except httptools.HttpParserUpgrade:  # no WebSocket routes (ws="none"): uvicorn's warning
            self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError:
            if self.phase in _OPEN:  # not one of our refusals, raised from a callback
                msg = "Invalid HTTP request received."
                self.logger.warning(msg)
                self.send_400_response(msg)
            return
        if self.phase is Phase.BODY and self._timer is None:
            self._timer = self.loop.call_at(self._body_due(), self._body_check)

    def _feed(self, data: memoryview) -> None:
        """Parse `data` at most max_header_bytes at a time, counting the bytes parsed since the
        last progress (the end of a head, body bytes, the end of a request): a head, or chunk
        framing and trailers, that runs past the limit is refused before more is parsed. (What
        follows progress inside one piece goes uncounted: at most twice the limit gets by.)"""
        limit = self.limits.max_header_bytes
        while data and self.phase in _OPEN:
            piece, data = data[: limit - self._stalled], data[limit - self._stalled :]
            self._stalled += len(piece)  # before: progress inside the piece zeroes it
            self.parser.feed_data(piece)
            if self._stalled >= limit and self.phase in _OPEN:
                what = "request line and headers" if self.phase is Phase.HEAD else "chunk framing or trailers"
                self._refuse(431, self.limits.head_too_large(what), "headers")
        if data and self.phase is Phase.LINGER:
            self._drop(len(data))

    # -- parser callbacks ---------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_count = 0
        self._body_bytes = 0
        if self._timer is None:  # a pipelined request, begun inside data already read
            self._timer = self.loop.call_later(self.limits.header_timeout_s, self._head_too_slow)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.limits.max_headers:
            self._refuse(431, self.limits.too_many_headers(), "headers")
            raise _Refused()
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._cancel_timer()
        self.phase = Phase.BODY
        self._stalled = 0
        self._body_clock = (self.loop.time(), 0)
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        self._stalled = 0
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._cancel_timer()
        self.phase = Phase.HEAD
        self._stalled = 0
        super().on_message_complete()

    def on_response_complete(self) -> None:
        if self.phase is Phase.BODY and self.cycle.response_complete:
            self.transport.close()  # answered before its body ended: read no more of it unbounded
        super().on_response_complete()

    # -- limits -------------------------------------------------------------------------

    def _head_too_slow(self) -> None:
        self._timer = None
        self._refuse(408, self.limits.head_too_slow(), "headers")

    def _body_due(self) -> float:
        started, base = self._body_clock
        return self.limits.body_due(started, self._body_bytes - base)

    def _body_check(self) -> None:
        self._timer = None
        now = self.loop.time()
        if self.flow.read_paused:  # the app is not reading: the client is not the slow one
            self._body_clock = (now, self._body_bytes)
        due = self._body_due()
        if now < due:
            self._timer = self.loop.call_at(due, self._body_check)
            return
        self._refuse(408, self.limits.body_too_slow(self._body_bytes), "body")

    def _refuse(
        self,
        status: int,
        detail: str,
        field: str | None,
        headers: Iterable[tuple[bytes, bytes]] = (),
        drain: int | None = None,
    ) -> None:
        """Answer `status` for the request in hand (if any), end its app, and linger."""
        peer = f"{self.client[0]}:{self.client[1]}" if self.client else "-"
        log.warning("%s: %d %s", peer, status, detail)
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # its app sees the client gone; its send writes nothing
            cycle.message_event.set()
            if cycle.response_started:  # no answer can go in the middle of another
                self._close_now()
                return
        self._raw.write(error_answer(status, detail, field, self.server_state.default_headers, headers))
        self._linger(drain)

    # -- closing ------------------------------------------------------------------------

    def close_requested(self) -> None:
        """uvicorn's code closes (after a `Connection: close` answer, a 400, at shutdown):
        linger if the client may still be sending, else close now."""
        if self.phase in _ENDING or self._raw.is_closing():
            return
        if self._may_still_send():
            self._linger()
        else:
            self._close_now()

    def _may_still_send(self) -> bool:
        if self.phase is Phase.BODY:
            # Told `Expect: 100-continue` and answered before the 100: it sends no body.
            return not (self.expect_100_continue and self._body_bytes == 0)
        return self._stalled > 0  # a head begun

    def _linger(self, drain: int | None = None) -> None:
        """Half-close (a FIN after the answer) and drop what the client still sends, then
        close: at its FIN, past `drain` bytes (drain_max_bytes unless said) or drain_timeout_s,
        or after an idle gap."""
        if self._stopping or not self._drain_can_end():
            self._close_now()
            return
        self._cancel_timer()
        self.phase = Phase.LINGER
        self._drain_left = self.limits.drain_max_bytes if drain is None else drain
        self.flow.resume_reading()
        if self._raw.can_write_eof():
            self._raw.write_eof()
        self._timer = self.loop.call_later(self.limits.drain_timeout_s, self._close_now)
        self._arm_idle()

    def _drain_can_end(self) -> bool:
        """False when dropping the rest is pointless: draining is off, or the body still to
        come (its Content-Length) is more than drain_max_bytes."""
        if self.limits.drain_max_bytes <= 0 or self.limits.drain_timeout_s <= 0:
            return False
        if self.phase is not Phase.BODY:
            return True
        declared = next((v for n, v in self.headers if n == b"content-length"), b"")
        return not declared.isdigit() or int(declared) - self._body_bytes <= self.limits.drain_max_bytes

    def _drop(self, n: int) -> None:
        if self.phase is Phase.CLOSED:
            return
        self._drain_left -= n
        if self._drain_left < 0:
            self._close_now()
        else:
            self._arm_idle()

    def _close_now(self) -> None:
        self.phase = Phase.CLOSED
        self._cancel_timer()
        self._unset_keepalive_if_required()
        if not self._raw.is_closing():
            self._raw.close()

    def _arm_idle(self) -> None:
        """uvicorn's keep-alive timer, also on a new connection and while lingering."""
        self._unset_keepalive_if_required()
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
