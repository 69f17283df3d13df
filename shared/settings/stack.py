"""Settings: where things are (Redis, the pipelines file, the data dir), jobs' lifetime, logging."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from shared.embedded_redis import MAXMEMORY_PATTERN
from shared.settings.group import SettingsGroup

DEFAULT_PIPELINES_FILE = Path(__file__).resolve().parent.parent / "pipelines.yaml"


class StackSettings(SettingsGroup):
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
    redis_maxmemory: str = Field(
        default="2gb",
        pattern=MAXMEMORY_PATTERN,
        description=(
            "Memory limit of the embedded Redis (`dlpipe up`), a Redis size (`2gb`, `512mb`); past it "
            "Redis refuses writes (`noeviction`: submits get 503) and drops nothing. `0` or empty: none."
        ),
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

    log_level: str = Field(default="INFO", description="Logging level of every process.")
