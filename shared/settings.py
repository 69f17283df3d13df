"""All of dlpipe's configuration: one pydantic-settings class, read from DLPIPE_* variables.

Build it once at an entry point (`Settings()`) and pass it down; nothing here reads the
environment at import time.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.cores import CoreSplit, available_cores, gpu_expected, split_cores

DEFAULT_PIPELINES_FILE = Path(__file__).resolve().parent / "pipelines.yaml"

# Standard Webhooks' spirit: at once, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h (about 27.6 h in all)
DEFAULT_WEBHOOK_RETRY_SCHEDULE_S = "0,5,300,1800,7200,18000,36000,36000"
WEBHOOK_SECRET_PREFIX = "whsec_"


def parse_delays(text: str) -> tuple[float, ...]:
    """'0,5,300' -> (0.0, 5.0, 300.0): one delay per attempt, in seconds, each >= 0, at least one."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        delays = tuple(float(p) for p in parts)
    except ValueError:
        raise ValueError(f"{text!r}: expected comma-separated seconds, like 0,5,300") from None
    if not delays or any(d < 0 or d != d or d == float("inf") for d in delays):
        raise ValueError(f"{text!r}: every delay must be a finite number of seconds >= 0")
    return delays


def check_webhook_secret(value: str) -> str:
    """A Standard Webhooks secret: `whsec_` then base64 of 24 to 64 bytes."""
    if not value.startswith(WEBHOOK_SECRET_PREFIX):
        raise ValueError(f"must start with {WEBHOOK_SECRET_PREFIX!r} (then base64 of 24 to 64 random bytes)")
    try:
        key = base64.b64decode(value[len(WEBHOOK_SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"not valid base64 after {WEBHOOK_SECRET_PREFIX!r}") from None
    if not 24 <= len(key) <= 64:
        raise ValueError(f"the key is {len(key)} bytes; use 24 to 64 random bytes")
    return value


def _default_split(data: dict[str, Any]) -> CoreSplit:
    """The default processes and threads for this machine's cores (shared/cores.py)."""
    return split_cores(available_cores(), gpu_expected(data.get("device")))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DLPIPE_", extra="ignore")

    # Where things are
    redis_url: str | None = Field(
        default=None,
        description="Redis to use. Unset: `dlpipe up` starts an embedded redis-server.",
    )
    pipelines_file: Path = Field(
        default=DEFAULT_PIPELINES_FILE, description="YAML file declaring models and pipelines."
    )
    data_dir: Path = Field(
        default=Path(".dlpipe"),
        description="Folder for the embedded Redis's data and logs (`dlpipe up`).",
    )
    redis_appendfsync: Literal["everysec", "always"] = Field(
        default="everysec",
        description=(
            "When the embedded Redis (`dlpipe up`) fsyncs its AOF: `everysec` (a power loss may lose "
            "the last second or two of accepted jobs) or `always` (every job is on disk before its 202)."
        ),
    )

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

    # Inputs given by reference (image pipelines)
    data_root: Path | None = Field(
        default=None,
        description=(
            "Folder whose files and subfolders jobs may name as `path` inputs; unset: `path` inputs are refused."
        ),
    )
    fetch_timeout_s: float = Field(
        default=10.0, gt=0, description="Deadline of one `image_url` fetch, redirects and body included."
    )
    fetch_allow_private: bool = Field(
        default=False,
        description="Let `image_url` reach loopback, private, link-local and other internal addresses.",
    )
    fetch_max_redirects: int = Field(
        default=3,
        ge=0,
        le=10,
        description="Redirects an `image_url` fetch follows, each checked again (0: none).",
    )

    # Jobs
    job_ttl_s: int = Field(
        default=24 * 3600, ge=60, description="How long job records and results stay in Redis."
    )

    deadline_sweep_interval_ms: int = Field(
        default=1000,
        ge=10,
        description=(
            "How often the API ends jobs past their deadline (`timeout_s`, else `DLPIPE_JOB_TTL_S`) "
            "that no worker has ended, and samples each pipeline's drain rate (for `Retry-After`)."
        ),
    )

    # Workers
    device: str | None = Field(
        default=None, description="Torch device of the model worker; unset: cuda if available, else cpu."
    )
    preprocess_concurrency: int = Field(
        default_factory=lambda data: _default_split(data).preprocess,
        ge=1,
        description=(
            "Processes `dlpipe worker preprocess` runs (default: a fifth of the cores, at least 1; "
            "with a GPU all but 2)."
        ),
    )
    model_replicas: int = Field(
        default_factory=lambda data: _default_split(data).model_replicas,
        ge=1,
        le=64,
        description=(
            "Processes `dlpipe worker model` runs, each with every model, sharing the model streams "
            "(default: on a CPU one per core, at most 8; with a GPU 1)."
        ),
    )
    torch_threads: int = Field(
        default_factory=lambda data: _default_split(data).torch_threads,
        ge=1,
        description=(
            "Intra-op threads of each model worker process (default: 1, more when the cores outnumber "
            "the replicas; with a GPU 1)."
        ),
    )
    model_overlap: bool = Field(
        default=True,
        description=(
            "Model worker: take and collate the next batch, and record the last, in threads of their "
            "own while the device runs one (false: one step after the other)."
        ),
    )
    read_block_ms: int = Field(
        default=1000, ge=1, description="How long an idle worker blocks on its streams per step."
    )
    heartbeat_interval_ms: int = Field(
        default=2000, ge=100, description="How often workers announce themselves."
    )
    worker_ttl_ms: int = Field(
        default=10000, ge=500, description="A worker unseen for this long is taken as dead."
    )

    lease_ms: int = Field(
        default=60000,
        ge=100,
        description="An entry taken by a worker and not acknowledged for this long is reclaimed by another.",
    )
    max_deliveries: int = Field(
        default=3,
        ge=1,
        description="Deliveries after which an item that keeps failing or killing its worker is given up.",
    )
    stream_trim_interval_s: float = Field(
        default=60.0,
        gt=0,
        description=(
            "How often each worker trims the entries every consumer group is done with from its "
            "streams (never one pending or not yet read)."
        ),
    )
    shutdown_grace_s: float = Field(
        default=30.0,
        gt=0,
        description="How long `dlpipe up` gives its children to stop after SIGTERM before killing them.",
    )

    # Notifier
    webhook_timeout_s: float = Field(default=15.0, gt=0, description="Timeout of one webhook attempt.")
    webhook_retry_schedule_s: str = Field(
        default=DEFAULT_WEBHOOK_RETRY_SCHEDULE_S,
        description="Delay before each webhook attempt, in seconds, comma-separated (one per attempt).",
    )
    webhook_secret: SecretStr | None = Field(
        default=None,
        description=(
            "Signing secret of webhooks (`whsec_` + base64 of 24-64 random bytes); unset: "
            "`dlpipe up` makes one in the data dir, a notifier without one sends nothing."
        ),
    )
    webhook_allow_private: bool = Field(
        default=False,
        description="Let webhooks reach loopback, private, link-local and other internal addresses.",
    )
    webhook_concurrency: int = Field(
        default=16, ge=1, le=256, description="Webhook deliveries the notifier makes at once (threads)."
    )

    log_level: str = Field(default="INFO", description="Logging level of every process.")

    @field_validator("webhook_retry_schedule_s")
    @classmethod
    def _check_schedule(cls, value: str) -> str:
        parse_delays(value)
        return value

    @field_validator("webhook_secret", mode="before")
    @classmethod
    def _empty_secret_is_unset(cls, value: object) -> object:
        """`DLPIPE_WEBHOOK_SECRET=` (as compose passes an unset host variable) means no secret."""
        return None if value == "" else value

    @field_validator("webhook_secret")
    @classmethod
    def _check_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            check_webhook_secret(value.get_secret_value())
        return value

    @property
    def webhook_delays_s(self) -> tuple[float, ...]:
        """The delay before each webhook attempt (the first: usually 0); as many as attempts."""
        return parse_delays(self.webhook_retry_schedule_s)

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
