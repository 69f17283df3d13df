"""All of dlpipe's configuration: one pydantic-settings class, read from DLPIPE_* variables.

Build it once at an entry point (`Settings()`) and pass it down; nothing here reads the
environment at import time. Its fields come in groups, one module each (stack, api, inputs,
workers, webhooks); `Settings` is all of them in one object.
"""

from __future__ import annotations

from pydantic import SecretStr

from shared.settings.api import ApiSettings
from shared.settings.inputs import InputSettings
from shared.settings.stack import DEFAULT_PIPELINES_FILE, StackSettings
from shared.settings.webhooks import (
    DEFAULT_WEBHOOK_RETRY_SCHEDULE_S,
    WEBHOOK_SECRET_PREFIX,
    WebhookSettings,
    check_webhook_secret,
    parse_delays,
)
from shared.settings.workers import WorkerSettings

__all__ = [
    "DEFAULT_PIPELINES_FILE",
    "DEFAULT_WEBHOOK_RETRY_SCHEDULE_S",
    "WEBHOOK_SECRET_PREFIX",
    "Settings",
    "check_webhook_secret",
    "parse_delays",
]


# Bases last to first: pydantic lists the fields of the last base first (stack, api, ...).
class Settings(WebhookSettings, WorkerSettings, InputSettings, ApiSettings, StackSettings):
    """Every setting of every process."""

    def worker_env(self) -> dict[str, str]:
        """The DLPIPE_* variables a child process needs to see these settings."""
        env: dict[str, str] = {}
        for name, value in self.model_dump().items():
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            env[f"DLPIPE_{name.upper()}"] = str(value)
        return env
