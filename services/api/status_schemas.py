"""The answer of `GET /v1/status` (services/api/status.py builds it)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class StreamStatus(BaseModel):
    stream: str = Field(description="cpu.<pipeline>.<stage>, model.<model> or events.", examples=["model.m1"])
    pipeline: str | None = Field(description="The pipeline of a stage's stream (null: a model's, events).")
    stage: str | None = Field(description="The stage of a stage's stream.")
    model: str | None = Field(description="The model of a model stream.")
    priority: str | None = Field(
        default=None, description="The priority its entries have (high, normal, low; null: events)."
    )
    workers: int = Field(description="Live workers reading it.")
    backlog: int = Field(description="lag + pending.")
    lag: int = Field(description="Entries no worker has taken yet.")
    pending: int = Field(description="Entries taken and not finished.")
    oldest_age_ms: int | None = Field(
        description="Age of the oldest entry waiting or in progress (null: none)."
    )


class ModelStatus(BaseModel):
    model: str
    items_per_s: float | None = Field(description="Over the last minute (null: not sampled long enough yet).")
    mean_batch: float | None = Field(description="Items per forward pass over the last minute.")
    duty_cycle: float | None = Field(
        description="Share of the last minute spent in forward passes, summed over the model's replicas."
    )


class PipelineStatus(BaseModel):
    pipeline: str
    jobs_per_s: float | None = Field(description="Jobs ended per second over the last 5 minutes.")
    p50_ms: float | None = Field(
        description="Median time from submission to end, last 5 minutes (succeeded or failed)."
    )
    p95_ms: float | None = Field(description="95th percentile of that time.")
    backlog: int = Field(description="Items accepted and not finished (what DLPIPE_MAX_BACKLOG caps).")


class WorkerStatus(BaseModel):
    id: str
    kind: str = Field(examples=["model"])
    streams: list[str]
    host: str | None
    pid: int | None
    age_ms: int = Field(description="Since its last heartbeat.")


class RedisStatus(BaseModel):
    used_memory: int
    maxmemory: int = Field(description="0: no limit.")
    persistence: dict[str, Any] = Field(
        description="aof_enabled, appendfsync, rdb_last_save_time, rdb_changes_since_last_save, and "
        "`problems`: what in its configuration can lose accepted jobs (as logged at start)."
    )
    version: str


class SystemStatus(BaseModel):
    ready: bool = Field(description="As /readyz: every stream served by a live worker, a notifier live.")
    reasons: list[str] = Field(description="Why not ready (empty when ready).")
    streams: list[StreamStatus]
    models: list[ModelStatus]
    pipelines: list[PipelineStatus]
    workers: list[WorkerStatus]
    redis: RedisStatus
    at: datetime
