"""The HTTP/1.1 protocol of every API connection: uvicorn's httptools protocol, with limits on
what one client may hold (the numbers: services/api/connection_limits.py, from the settings).

uvicorn alone reads a request head of any size (httptools joins a partial header in Python:
one 60 MB header stalled the event loop ~3 s), keeps a silent or slow client for ever (its
keep-alive timer runs only after a response) and, after an early answer such as a 413, closes
at once: a client still sending its body gets a reset instead of the answer. Here:

- head: the request line and headers must fit in max_header_bytes, counted in raw bytes as
  they arrive (one giant header is cut after that many, never buffered whole), and in
  max_headers fields, else 431; and arrive within header_timeout_s of their first byte, else
  408;
- idle: a connection with no request in hand (a new one, a kept-alive one) that sends nothing
  for idle_timeout_s is closed;
- body: body_timeout_s plus 1 s per body_min_rate bytes received (Apache mod_reqtimeout's
  rule), else 408 (closed unanswered if the answer has begun); the clock restarts when the
  app is the one not reading. Time the app takes (a long poll, `Prefer: wait`) never counts;
- cap: past max_connections open, a new connection gets 503 with Retry-After;
- closing while the client may still be sending (an early answer, a refusal here) lingers:
  the answer, a FIN, then what still comes is read and dropped (up to drain_max_bytes, for
  drain_timeout_s, an idle gap or the client's FIN ending it), so a client that sends its
  whole body before reading (urllib) gets the answer.
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

from services.api.connection_limits import ConnectionLimits, error_answer

log = logging.getLogger(__name__)


class Phase(enum.Enum):
    HEAD = "head"  # waiting for, or reading, a request line and headers
    BODY = "body"  # headers read, the body still arriving
    LINGER = "linger"  # answered for good: dropping what still comes, then closing


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
        return self._protocol.phase is Phase.LINGER or self._transport.is_closing()

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
        self.timeout_keep_alive = limits.idle_timeout_s  # type: ignore[assignment] - uvicorn's idle timer
        self.phase = Phase.HEAD
        self._raw: asyncio.Transport = None  # type: ignore[assignment]
        self._timer: asyncio.TimerHandle | None = None  # the head, body or linger deadline
        self._head_bytes = 0
        self._header_count = 0
        self._body_bytes = 0
        self._body_clock = (0.0, 0)  # when the body rule's clock started, and the bytes by then
        self._dropped = 0
        self._stopping = False

    @classmethod
    def factory(cls, limits: ConnectionLimits) -> Callable[..., GuardedHttpToolsProtocol]:
        """What uvicorn's `http=` option takes; it pickles (several API processes get it)."""
        return functools.partial(cls, limits=limits)

    # -- the connection -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._raw = transport
        super().connection_made(_CloseGuard(transport, self))  # type: ignore[arg-type]
        cap = self.limits.max_connections
        if len(self.connections) > cap:
            detail = f"too many open connections (at most {cap}, DLPIPE_API_MAX_CONNECTIONS); retry later"
            self._refuse(503, detail, None, [(b"retry-after", b"5")])
            return
        self._arm_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        super().connection_lost(exc)

    def shutdown(self) -> None:
        self._stopping = True
        if self.phase is Phase.LINGER:
            self._close_now()
        else:
            super().shutdown()

    def timeout_keep_alive_handler(self) -> None:
        """Silent for idle_timeout_s with no request in hand (or while lingering): close."""
        self._close_now()

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        if self.phase is Phase.LINGER:
            self._drop(len(data))
            return
        if self.phase is Phase.HEAD and self._timer is None:
            self._timer = self.loop.call_later(self.limits.header_timeout_s, self._head_too_slow)
        try:
            self._feed(memoryview(data))
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():  # pragma: no cover - served with ws="none"
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError:
            if self.phase is not Phase.LINGER:  # not one of our refusals, raised from a callback
                msg = "Invalid HTTP request received."
                self.logger.warning(msg)
                self.send_400_response(msg)
            return
        if self.phase is Phase.BODY and self._timer is None:
            self._timer = self.loop.call_at(self._body_due(), self._body_check)

    def _feed(self, data: memoryview) -> None:
        """Parse `data`, while a head is being read at most what is left of max_header_bytes
        at a time: a head that has not ended within it is refused before more is parsed.
        (Bytes of a pipelined head that follow a body in the same read are not counted.)"""
        limit = self.limits.max_header_bytes
        while data and self.phase is Phase.HEAD:
            room = limit - self._head_bytes
            piece, data = data[:room], data[room:]
            self._head_bytes += len(piece)  # before: a request ending in it zeroes the count
            self.parser.feed_data(piece)
            if self.phase is Phase.HEAD and self._head_bytes >= limit:
                self._refuse(431, f"request line and headers over {limit} bytes (DLPIPE_API_MAX_HEADER_BYTES)", "headers")
        if not data:
            return
        if self.phase is Phase.LINGER:
            self._drop(len(data))
        else:
            self.parser.feed_data(data)

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
            self._refuse(431, f"more than {self.limits.max_headers} header fields (DLPIPE_API_MAX_HEADERS)", "headers")
            raise _Refused()
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._cancel_timer()
        self.phase = Phase.BODY
        self._body_clock = (self.loop.time(), 0)
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._cancel_timer()
        self.phase = Phase.HEAD
        self._head_bytes = 0
        super().on_message_complete()

    def on_response_complete(self) -> None:
        if self.phase is Phase.BODY and self.cycle.response_complete:
            self.transport.close()  # answered before its body ended: read no more of it unbounded
        super().on_response_complete()

    # -- limits -------------------------------------------------------------------------

    def _head_too_slow(self) -> None:
        self._timer = None
        detail = f"request line and headers not received within {self.limits.header_timeout_s:g} s"
        self._refuse(408, f"{detail} (DLPIPE_API_HEADER_TIMEOUT_S)", "headers")

    def _body_due(self) -> float:
        started, base = self._body_clock
        return started + self.limits.body_timeout_s + (self._body_bytes - base) / self.limits.body_min_rate

    def _body_check(self) -> None:
        self._timer = None
        now = self.loop.time()
        if self.flow.read_paused:  # the app is not reading: the client is not the slow one
            self._body_clock = (now, self._body_bytes)
        due = self._body_due()
        if now < due:
            self._timer = self.loop.call_at(due, self._body_check)
            return
        rule = f"{self.limits.body_timeout_s:g} s plus 1 s per {self.limits.body_min_rate} bytes"
        detail = f"request body too slow: {self._body_bytes} bytes, allowed {rule}"
        self._refuse(408, f"{detail} (DLPIPE_API_BODY_TIMEOUT_S, DLPIPE_API_BODY_MIN_RATE)", "body")

    def _refuse(
        self, status: int, detail: str, field: str | None, headers: Iterable[tuple[bytes, bytes]] = ()
    ) -> None:
        """Answer `status` for the request in hand (if any), end its app, and linger."""
        peer = "%s:%d" % self.client if self.client else "-"
        log.warning("%s: %d %s", peer, status, detail)
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # its app sees the client gone; its send writes nothing
            cycle.message_event.set()
            if cycle.response_started:  # no answer can go in the middle of another
                self._close_now()
                return
        self._raw.write(error_answer(status, detail, field, self.server_state.default_headers, headers))
        self._linger()

    # -- closing ------------------------------------------------------------------------

    def close_requested(self) -> None:
        """uvicorn's code closes (after a `Connection: close` answer, a 400, at shutdown):
        linger if the client may still be sending, else close now."""
        if self.phase is Phase.LINGER or self._raw.is_closing():
            return
        if self._may_still_send():
            self._linger()
        else:
            self._close_now()

    def _may_still_send(self) -> bool:
        if self.phase is Phase.BODY:
            # Told `Expect: 100-continue` and answered before the 100: it sends no body.
            return not (self.expect_100_continue and self._body_bytes == 0)
        return self._head_bytes > 0

    def _linger(self) -> None:
        """Half-close (a FIN after the answer) and drop what the client still sends, then
        close: at its FIN, past drain_max_bytes or drain_timeout_s, or an idle gap."""
        if self._stopping or not self._drain_can_end():
            self._close_now()
            return
        self._cancel_timer()
        self.phase = Phase.LINGER
        self._dropped = 0
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
        self._dropped += n
        if self._dropped > self.limits.drain_max_bytes:
            self._close_now()
        else:
            self._arm_idle()

    def _close_now(self) -> None:
        self._cancel_timer()
        self._unset_keepalive_if_required()
        if not self._raw.is_closing():
            self._raw.close()

    def _arm_idle(self) -> None:
        """uvicorn's keep-alive timer, also on a new connection and while lingering."""
        self._unset_keepalive_if_required()
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
