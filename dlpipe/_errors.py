"""The client's exceptions: an answer of the API (>= 400) becomes an `APIError` subclass that
carries the API's own `detail` and `field` (services/api/errors.py writes them)."""

from __future__ import annotations

from typing import Any

import httpx


class DlpipeError(Exception):
    """Base of every error this package raises."""


class TransportError(DlpipeError):
    """The API could not be reached (or the connection broke) and retrying did not help; the
    httpx error is the `__cause__`."""


class WebhookVerificationError(DlpipeError):
    """A webhook whose signature, timestamp or headers do not check out."""


class APIError(DlpipeError):
    """The API answered with an error. `detail` and `field` are its body's; `status_code` and
    `headers` the response's."""

    def __init__(self, status_code: int, detail: str, field: str | None = None, headers: Any = None) -> None:
        self.status_code = status_code
        self.detail = detail
        self.field = field
        self.headers = httpx.Headers(headers or {})
        where = f" (field: {field})" if field else ""
        super().__init__(f"{status_code}: {detail}{where}")


class InvalidRequestError(APIError):
    """400, 413, 415 or 422: the request cannot be accepted as it is (`field` names what)."""


class AuthenticationError(APIError):
    """401 or 403: no API key, or a wrong one."""


class NotFoundError(APIError):
    """404: no such job or pipeline (or the job belongs to another key)."""


class ConflictError(APIError):
    """409: the job has ended already (cancel), or an Idempotency-Key's first request is in flight."""


class RateLimitedError(APIError):
    """429 after every retry: the pipeline's backlog stayed full."""


class UnavailableError(APIError):
    """503 (or 502/504) after every retry: Redis unavailable or full, the API stopping."""


_BY_STATUS: dict[int, type[APIError]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    403: AuthenticationError,
    404: NotFoundError,
    409: ConflictError,
    413: InvalidRequestError,
    415: InvalidRequestError,
    422: InvalidRequestError,
    429: RateLimitedError,
    502: UnavailableError,
    503: UnavailableError,
    504: UnavailableError,
}


def error_from_response(response: httpx.Response) -> APIError:
    """The exception for an error answer, with the body's `detail` and `field` when it has them."""
    detail: str = response.reason_phrase or "error"
    field = None
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        raw = body.get("detail")
        detail = raw if isinstance(raw, str) else (str(raw) if raw is not None else detail)
        field = body.get("field") if isinstance(body.get("field"), str) else None
    elif response.text:
        detail = response.text[:500]
    kind = _BY_STATUS.get(response.status_code, APIError)
    return kind(response.status_code, detail, field, response.headers)
