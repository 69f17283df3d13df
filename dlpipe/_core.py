"""What the sync and the async client share: how each call is built into a request, when and
how long to wait before a retry, and how answers are read. No I/O here (the clients send)."""

from __future__ import annotations

import email.utils
import json
import mimetypes
import os
import random
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Union
from urllib.parse import quote

import httpx

from dlpipe._errors import error_from_response
from shared.backoff import exponential_s, jittered

DEFAULT_URL = "http://127.0.0.1:8000"
URL_ENV = "DLPIPE_URL"
API_KEY_ENV = "DLPIPE_API_KEY"
IDEMPOTENCY_HEADER = "Idempotency-Key"
RETRY_STATUSES = frozenset({429, 503})
MAX_RETRY_AFTER_S = 60.0  # a Retry-After longer than this is waited as this (then asked again)
LONG_POLL_S = 30.0  # one GET ?wait_s= of wait(); the API caps it at DLPIPE_MAX_WAIT_S
USER_AGENT = "dlpipe-python/0.1"

# One file of `submit(files=...)`: a path, bytes, a file object, or (name, content[, content type]).
FileContent = bytes | IO[bytes]
FileInput = Union[
    str, "os.PathLike[str]", bytes, IO[bytes], tuple[str, FileContent], tuple[str, FileContent, str]
]


@dataclass
class Call:
    """One API call, ready to send (again, on a retry: the body is bytes, never a stream)."""

    method: str
    path: str
    params: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    json: Any = None
    files: list[tuple[str, tuple[str, bytes, str]]] | None = None
    data: dict[str, Any] | None = None
    timeout: float | None = None  # for this call (a long poll waits longer than the default)
    resend_safe: bool = True  # may go again after a broken connection (GET, keyed submits)
    stream: bool = False

    def build(self, http: httpx.Client | httpx.AsyncClient) -> httpx.Request:
        extra: dict[str, Any] = {} if self.timeout is None else {"timeout": self.timeout}
        return http.build_request(
            self.method,
            self.path,
            params=self.params,
            headers=self.headers,
            json=self.json,
            files=self.files,
            data=self.data,
            **extra,
        )


@dataclass(frozen=True)
class RetryPolicy:
    """429 and 503 are retried after their Retry-After (else exponential backoff with jitter), a
    broken connection too when the call is safe to send again; at most `max_retries` times."""

    max_retries: int = 8
    backoff_s: float = 0.5  # the first wait without Retry-After; doubled each time
    max_backoff_s: float = 30.0

    def backoff(self, attempt: int) -> float:
        return jittered(exponential_s(attempt, self.backoff_s, self.max_backoff_s))

    def after_response(self, call: Call, response: httpx.Response, attempt: int) -> float | None:
        """Seconds to wait before sending `call` again, or None: this answer is the answer."""
        if attempt >= self.max_retries:
            return None
        if response.status_code in RETRY_STATUSES:
            after = retry_after_s(response.headers.get("retry-after"))
            if after is None:
                return self.backoff(attempt)
            return min(after, MAX_RETRY_AFTER_S) + random.random() / 10  # noqa: S311 - spread the retries
        if response.status_code == 409 and IDEMPOTENCY_HEADER in call.headers and call.method == "POST":
            if "in progress" in response.text or "took it over" in response.text:
                return self.backoff(attempt)  # the key's first request is still being written
        return None

    def after_error(self, call: Call, exc: httpx.TransportError, attempt: int) -> float | None:
        if attempt >= self.max_retries:
            return None
        if call.resend_safe or isinstance(exc, httpx.ConnectError):  # never sent: always safe
            return self.backoff(attempt)
        return None


def retry_after_s(value: str | None) -> float | None:
    """A Retry-After header (seconds, or an HTTP date) as seconds from now; None if absent or bad."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def check(response: httpx.Response) -> httpx.Response:
    """The response if it is a success; else the APIError it stands for (body read first)."""
    if response.status_code < 400:
        return response
    raise error_from_response(response)


def headers(api_key: str | None, extra: Mapping[str, str] | None) -> dict[str, str]:
    out = {"User-Agent": USER_AGENT, **(extra or {})}
    if api_key:
        out["Authorization"] = f"Bearer {api_key}"
    return out


def base_url(url: str | None) -> str:
    return (url or os.environ.get(URL_ENV) or DEFAULT_URL).rstrip("/")


def api_key(key: str | None) -> str | None:
    return key if key is not None else (os.environ.get(API_KEY_ENV) or None)


def _id(job_id: str) -> str:
    return quote(str(job_id), safe="")


def wait_seconds(wait: bool | float | None) -> float | None:
    """submit's `wait`: None/False no waiting, True until the job ends (inf), N: up to N s."""
    if wait is None or wait is False:
        return None
    if wait is True:
        return float("inf")
    if wait < 0:
        raise ValueError("wait must be >= 0 seconds (or True: until the job ends)")
    return float(wait)


def _file_part(item: Any, index: int) -> tuple[str, bytes, str]:
    name: str | None = None
    content_type: str | None = None
    if isinstance(item, tuple):
        if len(item) == 3:
            name, item, content_type = item
        else:
            name, item = item
    if isinstance(item, (str, os.PathLike)):
        path = Path(item)
        content = path.read_bytes()
        name = name or path.name
    elif isinstance(item, (bytes, bytearray, memoryview)):
        content = bytes(item)
    else:  # a file object
        content = item.read()
        name = name or os.path.basename(str(getattr(item, "name", "") or "")) or None
    name = name or f"input-{index}"
    content_type = content_type or mimetypes.guess_type(name)[0] or "application/octet-stream"
    return name, content, content_type


def submit_call(
    pipeline: str,
    *,
    files: Sequence[FileInput] | None,
    inputs: Sequence[Mapping[str, Any]] | None,
    webhook: str | None,
    webhook_events: Sequence[str] | None,
    metadata: Mapping[str, Any] | None,
    timeout_s: float | None,
    options: Mapping[str, Any] | None,
    keep_inputs: bool | None,
    idempotency_key: str | None,
    wait_s: float | None,
    max_wait_per_request_s: float,
    http_timeout: float,
) -> Call:
    """POST /v1/pipelines/{name}/jobs, as multipart (files) or JSON (inputs). Every submit carries
    an Idempotency-Key (a fresh one unless given), so a retry can never make a second job."""
    if (files is None) == (inputs is None):
        raise ValueError("give either files=... or inputs=... (one of them)")
    call_headers = {IDEMPOTENCY_HEADER: idempotency_key or f"py-{uuid.uuid4().hex}"}
    timeout = http_timeout
    if wait_s is not None and wait_s > 0:
        asked = min(wait_s, max_wait_per_request_s)
        call_headers["Prefer"] = f"wait={asked:g}"
        timeout += asked
    call = Call("POST", f"/v1/pipelines/{_id(pipeline)}/jobs", headers=call_headers, timeout=timeout)
    if files is not None:
        if isinstance(files, (str, bytes, os.PathLike)):
            raise TypeError("files must be a list (of paths, bytes, file objects or (name, content) pairs)")
        call.files = [("files", _file_part(item, i)) for i, item in enumerate(files)]
        data: dict[str, Any] = {}
        if webhook is not None:
            data["webhook"] = webhook
        if webhook_events is not None:
            data["webhook_events"] = list(webhook_events)
        if metadata is not None:
            data["metadata"] = json.dumps(metadata, separators=(",", ":"))
        if timeout_s is not None:
            data["timeout_s"] = f"{timeout_s:g}"
        if options is not None:
            data["options"] = json.dumps(options, separators=(",", ":"))
        if keep_inputs is not None:
            data["keep_inputs"] = "true" if keep_inputs else "false"
        call.data = data or None
        return call
    if options is not None:
        raise ValueError("options go with files (multipart); put them in each input for JSON")
    body: dict[str, Any] = {"inputs": [dict(x) for x in inputs or []]}
    for name, value in (
        ("webhook", webhook),
        ("webhook_events", list(webhook_events) if webhook_events is not None else None),
        ("metadata", dict(metadata) if metadata is not None else None),
        ("timeout_s", timeout_s),
        ("keep_inputs", keep_inputs),
    ):
        if value is not None:
            body[name] = value
    call.json = body
    return call


def job_call(job_id: str, wait_s: float = 0, http_timeout: float = 30.0) -> Call:
    params = {"wait_s": f"{wait_s:g}"} if wait_s > 0 else None
    return Call("GET", f"/v1/jobs/{_id(job_id)}", params=params, timeout=http_timeout + wait_s)


def cancel_call(job_id: str) -> Call:
    # Not resent after a broken connection: a second cancel of a canceled job answers 409.
    return Call("POST", f"/v1/jobs/{_id(job_id)}/cancel", resend_safe=False)


def list_call(status: str | None, pipeline: str | None, limit: int, cursor: str | None) -> Call:
    params: dict[str, Any] = {"limit": limit}
    for name, value in (("status", status), ("pipeline", pipeline), ("cursor", cursor)):
        if value is not None:
            params[name] = getattr(value, "value", value)
    return Call("GET", "/v1/jobs", params=params)


def events_call(job_id: str, last_event_id: str | None, read_timeout: float) -> Call:
    call = Call("GET", f"/v1/jobs/{_id(job_id)}/events", headers={"Accept": "text/event-stream"}, stream=True)
    if last_event_id:
        call.headers["Last-Event-ID"] = last_event_id
    call.timeout = read_timeout  # keep-alives come every DLPIPE_SSE_KEEPALIVE_S (15 s)
    return call


def pipelines_call(name: str | None = None) -> Call:
    return Call("GET", "/v1/pipelines" if name is None else f"/v1/pipelines/{_id(name)}")


def remaining(deadline: float) -> float:
    return deadline - time.monotonic()
