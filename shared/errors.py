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


class Conflict(DlpipeError):
    """A request that clashes with the current state, e.g. a delivery still in flight (HTTP 409)."""


class Unavailable(DlpipeError):
    """A dependency (Redis, workers) is not there (HTTP 503)."""


class ItemError(DlpipeError):
    """One item cannot be processed (bad input): the item fails with this reason, the worker goes on."""
