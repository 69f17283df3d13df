"""Run the API under uvicorn: `serve(settings)` (what `dlpipe api` / `dlpipe up` call)."""

from __future__ import annotations

import logging

import uvicorn

from services.api.app import create_app
from shared.logs import setup_logging
from shared.settings import Settings

log = logging.getLogger(__name__)


def serve(settings: Settings) -> None:
    """Serve the API on settings.host:settings.port until stopped (SIGINT/SIGTERM)."""
    setup_logging(settings.log_level, "api")
    app = create_app(settings)
    log.info("api listening on http://%s:%d (docs at /docs)", settings.host, settings.port)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,  # keep our logging setup; uvicorn's loggers propagate to it
        log_level=settings.log_level.lower(),
        access_log=True,
        timeout_graceful_shutdown=10,
    )
