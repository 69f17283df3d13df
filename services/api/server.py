"""Run the API under uvicorn: `serve(settings)` (what `dlpipe api` / `dlpipe up` call).

With DLPIPE_API_WORKERS above 1, uvicorn runs that many API processes on the one port (each
builds its app from the environment, as `dlpipe api` would: `create_app_from_env`), for a
machine whose submits outrun one process's core.
"""

from __future__ import annotations

import logging
import os
import re

import uvicorn
from fastapi import FastAPI

from services.api.app import create_app
from services.api.connection_limits import connection_limits
from services.api.connections import GuardedHttpToolsProtocol
from shared.logs import setup_logging
from shared.settings import Settings

log = logging.getLogger(__name__)

_ACCESS_TOKEN = re.compile(r"([?&]access_token=)[^&\s]*")


class RedactAccessTokens(logging.Filter):
    """The access log without `?access_token=` keys (the routes browsers load take the API key
    in the query, services/api/auth.py): uvicorn logs each request's path with its query."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(
            isinstance(a, str) and "access_token=" in a for a in record.args
        ):
            record.args = tuple(
                _ACCESS_TOKEN.sub(r"\1[redacted]", a) if isinstance(a, str) else a for a in record.args
            )
        return True


def _redact_access_log() -> None:
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactAccessTokens) for f in access.filters):
        access.addFilter(RedactAccessTokens())


def create_app_from_env() -> FastAPI:
    """The app of one of several API worker processes: its settings from the environment."""
    settings = Settings()
    setup_logging(settings.log_level, "api")
    _redact_access_log()
    return create_app(settings)


def serve(settings: Settings) -> None:
    """Serve the API on settings.host:settings.port until stopped (SIGINT/SIGTERM)."""
    setup_logging(settings.log_level, "api")
    _redact_access_log()
    options = {
        "host": settings.host,
        "port": settings.port,
        "log_config": None,  # keep our logging setup; uvicorn's loggers propagate to it
        "log_level": settings.log_level.lower(),
        "access_log": True,
        "timeout_graceful_shutdown": 10,
        # Connection-level limits (header size and time, idle, slow bodies, a connection cap,
        # lingering closes): services/api/connections.py. No WebSocket routes, so no upgrades.
        "http": GuardedHttpToolsProtocol.factory(connection_limits(settings)),
        "ws": "none",
    }
    if settings.api_workers > 1:
        os.environ.update(settings.worker_env())  # the flags given to `dlpipe api`, for every process
        log.info(
            "api listening on http://%s:%d with %d processes (docs at /docs)",
            settings.host,
            settings.port,
            settings.api_workers,
        )
        uvicorn.run(
            "services.api.server:create_app_from_env", factory=True, workers=settings.api_workers, **options
        )
        return
    app = create_app(settings)
    log.info("api listening on http://%s:%d (docs at /docs)", settings.host, settings.port)
    uvicorn.run(app, **options)
