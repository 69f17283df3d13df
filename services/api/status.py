"""`GET /v1/status`: the whole system at a glance, from what /metrics and /readyz read already
(services/api/metrics.py read_snapshot, routers/health.py) and the sampled rates
(services/api/status_series.py), plus Redis's INFO."""

from __future__ import annotations

from typing import Any

from redis.exceptions import ResponseError

from services.api.metrics import EVENTS_STREAM, read_snapshot
from services.api.routers.health import live_worker_records, missing
from services.api.status_schemas import (
    ModelStatus,
    PipelineStatus,
    RedisStatus,
    StreamStatus,
    SystemStatus,
    WorkerStatus,
)
from services.api.status_series import StatusSampler
from shared import codecs, keys
from shared.heartbeat import served_streams
from shared.messages import ms_to_datetime, now_ms
from shared.pipeline_spec import PipelinesConfig
from shared.redis_checks import CONFIG_NAMES, problems


def _field(fields: dict[Any, Any], name: str) -> str | None:
    value = fields.get(name.encode(), fields.get(name))
    return None if value is None else codecs.text(value)


def _stream_of(label: str, config: PipelinesConfig) -> tuple[str | None, str | None, str | None]:
    """(pipeline, stage, model) of a stream label (any priority's: keys.stage_streams)."""
    label = keys.base_stream_name(label)
    models = {name: model for model, name in config.model_streams().items()}
    if label in models:
        return None, None, models[label]
    for pipeline in config.pipelines.values():
        for stage in pipeline.stages:
            if pipeline.stream_name(stage) == label:
                return pipeline.name, stage.name, None
    return None, None, None


async def _redis_status(client: Any) -> RedisStatus:
    async with client.pipeline(transaction=False) as pipe:
        for section in ("server", "memory", "persistence"):
            pipe.info(section)
        server, memory, persistence = await pipe.execute()
    config: dict[str, str] = {}
    try:
        for name in CONFIG_NAMES:
            reply = await client.config_get(name)
            config.update({codecs.text(k): codecs.text(v) for k, v in reply.items()})
        found = problems(config)
    except ResponseError as exc:  # a managed Redis may refuse CONFIG
        found = [f"could not read its configuration ({exc})"]
    return RedisStatus(
        used_memory=int(memory.get("used_memory", 0)),
        maxmemory=int(memory.get("maxmemory", 0)),
        persistence={
            "aof_enabled": bool(int(persistence.get("aof_enabled", 0))),
            "appendfsync": config.get("appendfsync"),
            "rdb_last_save_time": persistence.get("rdb_last_save_time"),
            "rdb_changes_since_last_save": persistence.get("rdb_changes_since_last_save"),
            "problems": found,
        },
        version=str(server.get("redis_version", "?")),
    )


async def read_status(
    client: Any, config: PipelinesConfig, worker_ttl_ms: int, sampler: StatusSampler
) -> SystemStatus:
    snapshot = await read_snapshot(client, config, worker_ttl_ms)
    records = await live_worker_records(client, worker_ttl_ms)
    hashes = [h for _, _, h in records]
    needed = config.work_streams()  # every priority's stream too
    now = now_ms()
    streams = []
    for label, backlog in sorted(snapshot.streams.items()):
        pipeline, stage, model = _stream_of(label, config)
        name = "notifier" if label == EVENTS_STREAM else label
        serving = (
            sum(1 for h in hashes if name in served_streams([h]))
            if label != EVENTS_STREAM
            else sum(1 for h in hashes if _field(h, "kind") == "notifier")
        )
        streams.append(
            StreamStatus(
                stream=label,
                pipeline=pipeline,
                stage=stage,
                model=model,
                workers=serving,
                priority=None if label == EVENTS_STREAM else keys.stream_priority(label).value,
                backlog=backlog.waiting + backlog.in_progress,
                lag=backlog.waiting,
                pending=backlog.in_progress,
                oldest_age_ms=None if backlog.oldest_ms is None else max(0, now - backlog.oldest_ms),
            )
        )
    model_rates, pipeline_rates = sampler.model_rates(), sampler.pipeline_rates()
    workers = [
        WorkerStatus(
            id=worker_id,
            kind=_field(h, "kind") or "?",
            streams=[s for s in (_field(h, "streams") or "").split(",") if s],
            host=_field(h, "host"),
            pid=int(pid) if (pid := _field(h, "pid")) and pid.isdigit() else None,
            age_ms=max(0, now - int(beat)),
        )
        for worker_id, beat, h in records
    ]
    reasons = missing(hashes, needed)
    return SystemStatus(
        ready=not reasons,
        reasons=reasons,
        streams=streams,
        models=[ModelStatus(model=m, **model_rates.get(m, {})) for m in config.model_streams()],
        pipelines=[
            PipelineStatus(pipeline=p, backlog=snapshot.backlog.get(p, 0), **pipeline_rates.get(p, {}))
            for p in sorted(config.pipelines)
        ],
        workers=workers,
        redis=await _redis_status(client),
        at=ms_to_datetime(now),
    )
