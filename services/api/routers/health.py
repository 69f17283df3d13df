"""Liveness (/healthz: the process answers) and readiness (/readyz: jobs would get done)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError

from services.api.deps import ConfigDep, RedisDep, SettingsDep
from services.api.schemas import Health, Readiness
from shared import codecs, keys
from shared.heartbeat import live_since, served_streams
from shared.messages import now_ms
from shared.redis_conn import NO_PRIMARY, is_no_primary, sentinel_problem

log = logging.getLogger(__name__)

router = APIRouter(tags=["health"])

NOTIFIER_KIND = "notifier"
READY_TIMEOUT_S = 2.0


@router.get(
    "/healthz",
    response_model=Health,
    summary="Liveness",
    description="200 while the API process answers; checks nothing else (not even Redis).",
)
async def healthz() -> Health:
    return Health(status="ok")


async def live_worker_records(client: Any, ttl_ms: int) -> list[tuple[str, float, dict[Any, Any]]]:
    """(id, last heartbeat ms, HGETALL) of every worker whose heartbeat is recent (PING first, so
    a dead Redis says so)."""
    await client.ping()
    beats = await client.zrangebyscore(keys.WORKERS, live_since(now_ms(), ttl_ms), "+inf", withscores=True)
    if not beats:
        return []
    async with client.pipeline(transaction=False) as pipe:
        for worker_id, _ in beats:
            pipe.hgetall(keys.worker(codecs.text(worker_id)))
        hashes = await pipe.execute()
    # a hash gone (expired) is a worker gone
    return [(codecs.text(w), float(beat), h) for (w, beat), h in zip(beats, hashes, strict=True) if h]


async def live_workers(client: Any, ttl_ms: int) -> list[dict[Any, Any]]:
    """HGETALL of every worker whose heartbeat is recent."""
    return [h for _, _, h in await live_worker_records(client, ttl_ms)]


def missing(workers: list[dict[Any, Any]], needed: list[str]) -> list[str]:
    """Why not ready: per stage (or model), its stream when no live worker serves any of its
    priorities, else each priority's stream that none serves; and a missing notifier."""
    served = served_streams(workers)
    unserved: dict[str, list[str]] = {}
    for stream in sorted(set(needed) - set(served)):
        unserved.setdefault(keys.base_stream_name(stream), []).append(stream)
    reasons = []
    for base, streams in sorted(unserved.items()):
        if set(streams) >= set(keys.stage_streams(base)):
            reasons.append(f"no live worker for stream {base}")
        else:
            reasons.extend(f"no live worker for stream {s}" for s in streams)
    kinds = {codecs.text(w.get(b"kind", w.get("kind", b""))) for w in workers}
    if NOTIFIER_KIND not in kinds:
        reasons.append("no live notifier worker")
    return reasons


async def _replication_problem(client: Any, settings: Any) -> str | None:
    """With Sentinel or DLPIPE_REDIS_MIN_REPLICAS: is the server we reach a primary with enough
    replicas for a submit's WAIT? (A replica answers reads: a failover must not look ready.)"""
    if not (settings.redis_sentinels or settings.redis_min_replicas):
        return None
    info = await client.info("replication")
    if info.get("role") != "master":
        return f"{NO_PRIMARY} (the server reached is a {info.get('role')})"
    replicas = int(info.get("connected_slaves", 0))
    if replicas < settings.redis_min_replicas:
        return (
            f"redis: the primary has {replicas} replicas, DLPIPE_REDIS_MIN_REPLICAS="
            f"{settings.redis_min_replicas}: submits would get 503"
        )
    return None


@router.get(
    "/readyz",
    response_model=Readiness,
    summary="Readiness",
    description=(
        "200 when Redis answers and every stream of every pipeline (and the job events) is served "
        "by at least one live worker, by their heartbeats; with Sentinel or min replicas set, when "
        "the Redis reached is a primary with enough replicas (a failover under way says `redis: "
        "failing over / no primary`). Otherwise 503, naming what is missing."
    ),
    responses={503: {"model": Readiness, "description": "Not ready; `reason` says why."}},
)
async def readyz(client: RedisDep, config: ConfigDep, settings: SettingsDep) -> JSONResponse:
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):  # a probe must answer: redis-py retries for longer
            reason = await sentinel_problem(client)
            if reason is None:
                workers = await live_workers(client, settings.worker_ttl_ms)
                replication = await _replication_problem(client, settings)
    except TimeoutError:
        reason = f"redis unreachable: no answer within {READY_TIMEOUT_S:g} s"
    except (RedisError, OSError) as exc:
        reason = NO_PRIMARY if is_no_primary(exc) else f"redis unreachable: {exc}"
    if reason is not None:
        log.warning("not ready: %s", reason)
        return JSONResponse(Readiness(status="unavailable", reason=reason).model_dump(), status_code=503)
    needed = config.work_streams()  # every priority's stream too
    reasons = ([replication] if replication else []) + missing(workers, needed)
    if reasons:
        body = Readiness(status="unavailable", reason="; ".join(reasons), workers=len(workers))
        return JSONResponse(body.model_dump(), status_code=503)
    return JSONResponse(Readiness(status="ready", workers=len(workers)).model_dump())
