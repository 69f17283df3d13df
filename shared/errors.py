"""dlpipe's error hierarchy. The API maps these to HTTP in one place (services/api/errors.py)."""

from __future__ import annotations


class DlpipeError(Exception):
    """Base of every error dlpipe raises on purpose."""


class NotFound(DlpipeError):
    """A pipeline or job that does not exist (HTTP 404)."""


class InvalidRequest(DlpipeError):
    """A request that cannot be accepted (HTTP 422); `field` names the offending part."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class PayloadTooLarge(DlpipeError):
    """A request body over one of the API's size limits (HTTP 413); `field` names what."""

    def __init__(self, message: str, field: str = "body") -> None:
        super().__init__(message)
        self.field = field


class Conflict(DlpipeError):
    """A request that clashes with the current state, e.g. a delivery still in flight (HTTP 409)."""


class Unavailable(DlpipeError):
    """A dependency (Redis, workers) is not there (HTTP 503, `Retry-After` from `retry_after_s`)."""

    def __init__(self, message: str = "", retry_after_s: int = 5) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class TimedOut(DlpipeError):
    """A synchronous request whose job did not end in time (HTTP 504); the job lapses at its deadline."""


class ItemError(DlpipeError):
    """One item cannot be processed (bad input): the item fails with this reason, the worker goes on."""


ECHO_CHARS = 64  # the most of a client's value an error message repeats


def cut(text: str, limit: int = ECHO_CHARS) -> str:
    """`text` if it is at most `limit` characters, else its start and its length."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def shown(value: object, limit: int = ECHO_CHARS) -> str:
    """`value` as an error message quotes it (repr), cut to about `limit` characters: a client's
    10,000-character id comes back as its start and its length, not whole."""
    text = repr(value)
    if len(text) <= limit:
        return text
    length = len(value) if isinstance(value, (str, bytes)) else len(text)
    return f"{text[:limit]}... ({length} characters)"
