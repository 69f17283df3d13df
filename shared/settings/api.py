"""Settings of the API: where it listens, its processes, request limits, keys, waiting, and
what one client connection may hold."""

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
    max_json_body_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=1024,
        description=(
            "Largest JSON request body (413 above it): a JSON body is parsed in one go, which holds the "
            "API's event loop (about 3 ms per MiB), where multipart is read as it arrives; send large "
            "files as multipart."
        ),
    )
    max_json_values: int = Field(
        default=500_000,
        ge=1000,
        description=(
            "Most values a JSON request body may hold, counted as it arrives (every `[`, `{` and `,`, "
            "strings included; 413 above it): millions of tiny values cost the parser seconds."
        ),
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
    sync_timeout_s: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description=(
            "Longest a synchronous protocol request (`POST /v1/embeddings`, `POST /v2/models/{m}/infer`) "
            "waits for its job (504 past it); the job gets it as its `timeout_s`, so it never outlives "
            "its request."
        ),
    )
    redis_max_connections: int = Field(
        default=64,
        ge=2,
        description=(
            "Connections to Redis each API process keeps at most; a request finding them all in use "
            "waits for one (up to `DLPIPE_REDIS_POOL_TIMEOUT_S`) instead of failing."
        ),
    )
    redis_pool_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="How long an API request waits for a free Redis connection before answering 503.",
    )
    api_keys: SecretStr | None = Field(
        default=None,
        description=(
            "Comma-separated API keys; set, every /v1 call needs `Authorization: Bearer <key>` "
            "(else 401). Unset: no authentication."
        ),
    )

    # The console's reads (issue 11)
    keep_inputs: bool = Field(
        default=False,
        description=(
            "Keep every job's uploaded and base64 inputs while the job is kept, for "
            "`GET /v1/jobs/{id}/inputs/{index}` (a request's `keep_inputs` overrides it). Kept inputs "
            "count in the byte budget while their job is open, not after it ends."
        ),
    )
    sse_keepalive_s: float = Field(
        default=15.0,
        gt=0,
        le=3600,
        description="How often `GET /v1/jobs/{id}/events` sends a `: keep-alive` comment while nothing happens.",
    )

    # Connections (services/api/connections.py)
    api_max_header_bytes: int = Field(
        default=32 * 1024,
        ge=1024,
        le=1024 * 1024,
        description=(
            "Most bytes a request's line and headers may take, counted as they arrive (431 above it)."
        ),
    )
    api_max_headers: int = Field(
        default=100, ge=1, le=10000, description="Most header fields one request may send (431 above it)."
    )
    api_header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description=(
            "How long a request's line and headers may take to arrive from their first byte (408 past it)."
        ),
    )
    api_idle_timeout_s: float = Field(
        default=5.0,
        gt=0,
        description=(
            "A connection that sends nothing for this long with no request in hand (a new one, or a "
            "kept-alive one between requests) is closed."
        ),
    )
    api_body_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description=(
            "How long a request body may take to arrive, plus 1 s per `DLPIPE_API_BODY_MIN_RATE` bytes "
            "received (408 past it); time the API itself takes (a long poll) never counts."
        ),
    )
    api_body_min_rate: int = Field(
        default=10000,
        ge=1,
        description=(
            "Bytes of body that buy a slow upload one more second (`DLPIPE_API_BODY_TIMEOUT_S`): "
            "about the slowest average rate a long body may arrive at."
        ),
    )
    api_max_connections: int = Field(
        default=4096,
        ge=1,
        description=(
            "Open connections one API process holds; past it a new one gets 503 with `Retry-After`. "
            "The open-files limit is raised to fit (up to its hard limit), else this is lowered."
        ),
    )
    api_drain_max_bytes: int = Field(
        default=128 * 1024 * 1024,
        ge=0,
        description=(
            "After an answer that ends a connection while the client is still sending (a 413, say), "
            "how much more the API reads and drops so the client can read the answer (0: none)."
        ),
    )
    api_drain_timeout_s: float = Field(
        default=10.0,
        ge=0,
        description=(
            "How long the API goes on reading and dropping after such an answer before it closes "
            "(an idle gap of `DLPIPE_API_IDLE_TIMEOUT_S` or the client's close ends it sooner)."
        ),
    )
