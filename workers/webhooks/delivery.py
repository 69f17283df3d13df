"""One HTTP attempt of a webhook: the SSRF guard, a hard deadline, no redirects, the answer classified.

The URL's host is resolved and every address checked (shared/netguard.py) on every attempt;
the request then goes to the checked address itself (the host replaced by the address, the
name kept in `Host` and, for https, in the TLS server name the certificate is checked
against), so the name is never resolved again. Each attempt opens its own connection (no
keep-alive: a pooled connection could be reused for another name on the same address) and
has one deadline, the whole attempt included (connect, TLS, send, the answer's head and at
most READ_LIMIT bytes of its body): a watchdog shuts the socket down when it passes, so a
receiver that answers a byte at a time cannot hold a thread longer. Environment proxies are
ignored. Only a 2xx answer is a success.
"""

from __future__ import annotations

import heapq
import itertools
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from shared import netguard

READ_LIMIT = 64 * 1024  # bytes of an answer's body read (then the connection is closed)
RETRY_AFTER_MAX_S = 3600.0  # a Retry-After longer than this is cut to it
RETRY_AFTER_STATUS = frozenset({429, 503})


@dataclass(frozen=True)
class Outcome:
    """How one attempt went."""

    ok: bool
    status_code: int | None = None
    error: str | None = None
    retry_after_s: float | None = None  # the receiver's Retry-After (429/503), capped
    final: bool = False  # no retry can help: 410 Gone, or an address the guard refuses


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Retry-After as seconds from `now` (seconds or an HTTP date), capped; None if unreadable."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        seconds = float(text)
    else:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None or when.tzinfo is None:
            return None
        seconds = when.timestamp() - now
    return min(max(seconds, 0.0), RETRY_AFTER_MAX_S)


class Watchdog:
    """One thread that runs callbacks at their deadlines (cheaper than a timer thread per attempt)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._cancelled: set[int] = set()
        self._ids = itertools.count()
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="webhook-watchdog", daemon=True)
        self._thread.start()

    def call_at(self, deadline: float, callback: Callable[[], None]) -> int:
        with self._cond:
            ident = next(self._ids)
            heapq.heappush(self._heap, (deadline, ident, callback))
            self._cond.notify()
            return ident

    def cancel(self, ident: int) -> None:
        with self._cond:
            self._cancelled.add(ident)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap:
                    self._cond.wait()
                deadline, ident, callback = self._heap[0]
                wait = deadline - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
                if ident in self._cancelled:
                    self._cancelled.discard(ident)
                    continue
            try:
                callback()
            except OSError:
                pass


class _Attempt:
    """The socket of one attempt (caught through httpcore's trace hook) and its deadline."""

    def __init__(self) -> None:
        self.sock: socket.socket | None = None
        self.expired = False
        self.lock = threading.Lock()

    def trace(self, name: str, info: dict[str, Any]) -> None:
        if name == "connection.connect_tcp.complete" and info.get("return_value") is not None:
            with self.lock:
                self.sock = info["return_value"].get_extra_info("socket")
                expired = self.expired
            if expired:
                self.expire()

    def expire(self) -> None:
        with self.lock:
            self.expired = True
            sock = self.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class Sender:
    """POSTs signed bodies to webhook URLs, guarded; thread-safe (one per notifier process)."""

    def __init__(
        self,
        timeout_s: float,
        policy: netguard.AddressPolicy,
        resolver: netguard.Resolver = netguard.system_resolver,
        verify: ssl.SSLContext | bool = True,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.timeout_s = timeout_s
        self.policy = policy
        self.resolver = resolver
        self.watchdog = Watchdog()
        self.client = httpx.Client(
            timeout=httpx.Timeout(timeout_s),
            follow_redirects=False,
            trust_env=False,
            verify=verify,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=0),
            transport=transport,
        )

    def close(self) -> None:
        self.client.close()

    def send(self, url: str, headers: dict[str, str], body: bytes) -> Outcome:
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError, ValueError):
            return Outcome(ok=False, error=self._invalid(url), final=True)
        if parsed.scheme not in ("http", "https"):
            return Outcome(ok=False, error=f"{parsed.scheme or 'no'} scheme: only http and https", final=True)
        host = parsed.raw_host.decode("ascii")
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            addresses = netguard.resolve_checked(host, port, self.policy, self.resolver)
        except netguard.AddressRefused as exc:
            # Refused: no retry helps. Not resolved: DNS may answer later.
            return Outcome(ok=False, error=str(exc), final=exc.address is not None)
        literal = _is_literal(host)
        deadline = time.monotonic() + self.timeout_s
        error = "no address"
        for address in addresses:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            target = parsed.copy_with(host=str(address))
            sni = host if parsed.scheme == "https" and not literal else None
            outcome = self._post(target, parsed.netloc.decode("ascii"), sni, headers, body, deadline)
            if outcome is not None:
                return outcome
            error = f"cannot connect to {host} ({address})"
        return Outcome(ok=False, error=error if time.monotonic() < deadline else self._timed_out())

    def _invalid(self, url: str) -> str:
        """Why a URL httpx cannot read is not sent: the guard's word when its host is an
        address in a spelling httpx refuses (`0177.0.0.1`)."""
        try:
            host = urlsplit(url).hostname or ""
            literal = netguard.parse_literal(host)
            if literal is not None:
                netguard.check_address(literal, host, self.policy)
        except netguard.AddressRefused as exc:
            return str(exc)
        except ValueError:
            pass
        return "not a valid URL"

    def _timed_out(self) -> str:
        return f"timed out after {self.timeout_s:g} s"

    def _post(
        self,
        target: httpx.URL,
        host_header: str,
        sni: str | None,
        headers: dict[str, str],
        body: bytes,
        deadline: float,
    ) -> Outcome | None:
        """One address; None when it cannot be connected to (the next one is tried)."""
        attempt = _Attempt()
        extensions: dict[str, Any] = {"trace": attempt.trace}
        if sni:
            extensions["sni_hostname"] = sni
        request = self.client.build_request(
            "POST",
            target,
            content=body,
            headers={**headers, "Host": host_header},
            timeout=httpx.Timeout(max(0.001, deadline - time.monotonic())),
            extensions=extensions,
        )
        watch = self.watchdog.call_at(deadline, attempt.expire)
        try:
            response = self.client.send(request, stream=True)
            try:
                size = 0
                for chunk in () if response.is_stream_consumed else response.iter_raw():
                    size += len(chunk)
                    if size >= READ_LIMIT:
                        break
            finally:
                response.close()
        except httpx.ConnectError:
            if attempt.expired:
                return Outcome(ok=False, error=self._timed_out())
            return None
        except httpx.TimeoutException:
            return Outcome(ok=False, error=self._timed_out())
        except httpx.HTTPError as exc:
            if attempt.expired:
                return Outcome(ok=False, error=self._timed_out())
            return Outcome(ok=False, error=f"{type(exc).__name__}: {exc}")
        finally:
            self.watchdog.cancel(watch)
        return classify(response.status_code, response.headers, time.time())


def classify(status: int, headers: httpx.Headers, now: float) -> Outcome:
    """2xx: success. 410: gone, no retry. 429/503: retry, honouring Retry-After. Else a failure."""
    if 200 <= status < 300:
        return Outcome(ok=True, status_code=status)
    if status == 410:
        gone = "HTTP 410 Gone: the receiver wants no more"
        return Outcome(ok=False, status_code=status, error=gone, final=True)
    if 300 <= status < 400:
        return Outcome(ok=False, status_code=status, error=f"HTTP {status}: redirects are not followed")
    retry_after = None
    if status in RETRY_AFTER_STATUS:
        retry_after = parse_retry_after(headers.get("retry-after"), now)
    return Outcome(ok=False, status_code=status, error=f"HTTP {status}", retry_after_s=retry_after)


def _is_literal(host: str) -> bool:
    try:
        return netguard.parse_literal(host) is not None
    except ValueError:
        return False
