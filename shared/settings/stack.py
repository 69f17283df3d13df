"""Settings: where things are (Redis, the pipelines file, the data dir), jobs' lifetime, logging."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from shared.embedded_redis import MAXMEMORY_PATTERN
from shared.settings.group import SettingsGroup

DEFAULT_PIPELINES_FILE = Path(__file__).resolve().parent.parent / "pipelines.yaml"


class StackSettings(SettingsGroup):
    # Where things are
    redis_url: str | None = Field(
        default=None,
        description="Redis to use. Unset: `dlpipe up` starts an embedded redis-server.",
    )
    redis_sentinels: str | None = Field(
        default=None,
        description=(
            "Redis Sentinel nodes, `host:port,host:port,...`: every process finds the primary through "
            "them (and the new one after a failover); takes the place of `DLPIPE_REDIS_URL`."
        ),
    )
    redis_master_name: str = Field(
        default="dlpipe",
        min_length=1,
        description="The Sentinel name of the primary (`DLPIPE_REDIS_SENTINELS`).",
    )
    redis_sentinel_password: SecretStr | None = Field(
        default=None, description="Password of the sentinels themselves, if they have one."
    )
    redis_password: SecretStr | None = Field(
        default=None, description="Password of the Redis nodes found through the sentinels."
    )
    redis_db: int = Field(default=0, ge=0, description="Database number, with `DLPIPE_REDIS_SENTINELS`.")
    redis_min_replicas: int = Field(
        default=0,
        ge=0,
        description=(
            "Replicas that must have each accepted job (Redis `WAIT`) before the API answers 202, and "
            "each cancel or webhook's state before it is answered or sent; past "
            "`DLPIPE_REDIS_WAIT_TIMEOUT_MS` the API answers 503. 0: no wait (replication is asynchronous: "
            "a failover can lose a job just accepted)."
        ),
    )
    redis_wait_timeout_ms: int = Field(
        default=1000, ge=1, description="How long a `WAIT` for `DLPIPE_REDIS_MIN_REPLICAS` may take."
    )
    redis_retries: int = Field(
        default=6,
        ge=0,
        description=(
            "How often a Redis command is tried again on a lost connection (exponential backoff from "
            "0.05 s, capped at `DLPIPE_REDIS_RETRY_CAP_S`): rides out a Sentinel failover."
        ),
    )
    redis_retry_cap_s: float = Field(default=1.0, gt=0, description="The longest wait between two tries.")
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

    @field_validator("redis_sentinels")
    @classmethod
    def _sentinels(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        parse_sentinels(value)  # a clear error at start, not at the first connection
        return value.strip()

    @model_validator(mode="after")
    def _one_redis(self) -> StackSettings:
        if self.redis_sentinels and self.redis_url:
            raise ValueError("set DLPIPE_REDIS_URL or DLPIPE_REDIS_SENTINELS, not both")
        return self

    def sentinel_nodes(self) -> list[tuple[str, int]]:
        """The sentinels as (host, port) pairs; [] without Sentinel."""
        return parse_sentinels(self.redis_sentinels) if self.redis_sentinels else []

    def redis_configured(self) -> bool:
        return bool(self.redis_url or self.redis_sentinels)


def parse_sentinels(text: str) -> list[tuple[str, int]]:
    """`host:port,host:port` (`[v6]:port` too) -> [(host, port), ...]; ValueError naming the bad one."""
    nodes: list[tuple[str, int]] = []
    for part in (p.strip() for p in text.split(",")):
        host, sep, port = part.rpartition(":")
        v6 = host.startswith("[") and host.endswith("]")
        host = host[1:-1] if v6 else host
        good_host = bool(re.fullmatch(r"[0-9A-Fa-f:.]+" if v6 else r"[A-Za-z0-9_.-]+", host))
        if not sep or not good_host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(
                f"DLPIPE_REDIS_SENTINELS: {part!r} is not host:port (expected host:port,host:port,...)"
            )
        nodes.append((host, int(port)))
    return nodes
