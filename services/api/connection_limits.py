"""What one client connection may hold, from the settings (DLPIPE_API_* connection fields), and
the plain HTTP answers the connection protocol (services/api/connections.py) gives itself.

The open-files limit is part of it: a cap of connections the process cannot open is no cap,
so the API raises its soft RLIMIT_NOFILE to the hard one when the cap needs more, and lowers
the cap (loudly) when even that is short, leaving room for its own files and Redis.
"""

from __future__ import annotations

import json
import logging
import resource
from collections.abc import Iterable
from dataclasses import dataclass

from uvicorn.protocols.http.httptools_impl import STATUS_LINE

from shared.settings import Settings

log = logging.getLogger(__name__)

RESERVED_FILES = 256  # descriptors kept for the process itself: listener, Redis, logs, imports


@dataclass(frozen=True)
class ConnectionLimits:
    """The rules of services/api/connections.py, one per connection-level setting."""

    max_header_bytes: int
    max_headers: int
    header_timeout_s: float
    idle_timeout_s: float
    body_timeout_s: float
    body_min_rate: int
    max_connections: int
    drain_max_bytes: int
    drain_timeout_s: float

    def body_due(self, started: float, received: int) -> float:
        """When a body whose clock started at `started` and has since received `received` bytes
        is too slow: the grace, plus 1 s per body_min_rate bytes (mod_reqtimeout's rule)."""
        return started + self.body_timeout_s + received / self.body_min_rate

    # What each refusal says (the detail of its JSON error), naming the setting to change.
    def head_too_large(self, what: str) -> str:
        return f"{what} over {self.max_header_bytes} bytes (DLPIPE_API_MAX_HEADER_BYTES)"

    def too_many_headers(self) -> str:
        return f"more than {self.max_headers} header fields (DLPIPE_API_MAX_HEADERS)"

    def head_too_slow(self) -> str:
        return (
            f"request line and headers not received within {self.header_timeout_s:g} s "
            "(DLPIPE_API_HEADER_TIMEOUT_S)"
        )

    def body_too_slow(self, received: int) -> str:
        return (
            f"request body too slow: {received} bytes, allowed {self.body_timeout_s:g} s plus 1 s per "
            f"{self.body_min_rate} bytes (DLPIPE_API_BODY_TIMEOUT_S, DLPIPE_API_BODY_MIN_RATE)"
        )

    def too_many_connections(self) -> str:
        cap = self.max_connections
        return f"too many open connections (at most {cap}, DLPIPE_API_MAX_CONNECTIONS); retry later"

    @classmethod
    def from_settings(cls, settings: Settings, max_connections: int | None = None) -> ConnectionLimits:
        return cls(
            max_header_bytes=settings.api_max_header_bytes,
            max_headers=settings.api_max_headers,
            header_timeout_s=settings.api_header_timeout_s,
            idle_timeout_s=settings.api_idle_timeout_s,
            body_timeout_s=settings.api_body_timeout_s,
            body_min_rate=settings.api_body_min_rate,
            max_connections=max_connections or settings.api_max_connections,
            drain_max_bytes=settings.api_drain_max_bytes,
            drain_timeout_s=settings.api_drain_timeout_s,
        )


def connection_limits(settings: Settings) -> ConnectionLimits:
    """The limits the API runs with: the settings, with the connection cap fitted to the
    open-files limit (raised first, if it is short; child processes inherit it)."""
    wanted = settings.api_max_connections
    files = raise_open_files(wanted + RESERVED_FILES)
    usable = max(1, files - RESERVED_FILES)
    if usable < wanted:
        log.warning(
            "DLPIPE_API_MAX_CONNECTIONS=%d, but this process may open only %d files (RLIMIT_NOFILE, "
            "hard limit): at most %d connections at once; raise the limit (ulimit -n) for more",
            wanted,
            files,
            usable,
        )
    return ConnectionLimits.from_settings(settings, max_connections=min(wanted, usable))


def raise_open_files(needed: int) -> int:
    """Raise the soft open-files limit to the hard one if it is below `needed`; the soft
    limit in force after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return needed
    if soft >= needed:
        return soft
    target = needed if hard == resource.RLIM_INFINITY else hard
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:  # e.g. a platform that refuses; keep what we have
        log.warning("could not raise the open-files limit from %d to %d: %s", soft, target, exc)
        return soft
    log.info("open-files limit raised from %d to %d (RLIMIT_NOFILE)", soft, target)
    return target


def error_answer(
    status: int,
    detail: str,
    field: str | None,
    default_headers: Iterable[tuple[bytes, bytes]] = (),
    extra_headers: Iterable[tuple[bytes, bytes]] = (),
) -> bytes:
    """A whole HTTP/1.1 answer that closes the connection, with the API's error body
    {"detail": ..., "field": ...} (the shape services/api/errors.py gives every error)."""
    body = json.dumps({"detail": detail, "field": field}).encode()
    head = [STATUS_LINE[status]]
    headers = [
        *default_headers,
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        *extra_headers,
    ]
    head.extend(name + b": " + value + b"\r\n" for name, value in headers)
    return b"".join([*head, b"\r\n", body])
