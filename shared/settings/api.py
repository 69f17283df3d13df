"""Settings of the API: where it listens, its processes, request limits, keys, waiting."""

from __future__ import annotations

from pydantic import Field, SecretStr

from shared.settings.group import SettingsGroup


class ApiSettings(SettingsGroup):
    # API
    host: str = Field(default="127.0.0.1", description="Address the API listens on.")
    port: int = Field(default=8000, description="Port the API listens on.")
    api_workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="API processes on the one port (uvicorn workers); more when submits outrun one core.",
    )
    max_inputs_per_job: int = Field(default=1000, ge=1, description="Most inputs one job may hold.")
    max_input_bytes: int = Field(
        default=20 * 1024 * 1024, ge=1, description="Largest single input (decoded bytes)."
    )
    max_body_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1024,
        description="Largest request body the API reads (413 above it), counted as it arrives.",
    )
    max_backlog: int = Field(
        default=10000,
        ge=1,
        description=(
            "Items a pipeline may hold accepted but not finished; new jobs get 429 with "
            "`Retry-After` while it is at or over this."
        ),
    )
    max_backlog_bytes: int = Field(
        default=1024 * 1024 * 1024,
        ge=1,
        description=(
            "Bytes of inputs (as stored in Redis: items' inputs and uploaded videos) that jobs not "
            "finished may hold, all pipelines together; new jobs get 429 with `Retry-After` while "
            "at or over this."
        ),
    )
    idempotency_ttl_s: int = Field(
        default=24 * 3600,
        ge=24 * 3600,
        description="How long an `Idempotency-Key` is remembered (the same request gets the same job).",
    )
    max_wait_s: float = Field(
        default=60.0,
        ge=0,
        le=3600,
        description=(
            "Longest a request may wait for its job to end: `GET /v1/jobs/{id}?wait_s=` and "
            "`Prefer: wait=` on submit (longer asks are cut to this)."
        ),
    )
    api_keys: SecretStr | None = Field(
        default=None,
        description=(
            "Comma-separated API keys; set, every /v1 call needs `Authorization: Bearer <key>` "
            "(else 401). Unset: no authentication."
        ),
    )
