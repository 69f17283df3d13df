"""Liveness (/healthz: the process answers) and readiness (/readyz: jobs would get done)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError

from services.api.deps import ConfigDep, RedisDep, SettingsDep
from services.api.schemas import Health, Readiness
from shared import keys
from shared.heartbeat import live_since, served_streams
from shared.messages import now_ms

log = logging.getLogger(__name__)

router = APIRouter(tags=["health"])

NOTIFIER_KIND = "notifier"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


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
            pipe.hgetall(keys.worker(_text(worker_id)))
        hashes = await pipe.execute()
    # a hash gone (expired) is a worker gone
    return [(_text(w), float(beat), h) for (w, beat), h in zip(beats, hashes, strict=True) if h]


async def live_workers(client: Any, ttl_ms: int) -> list[dict[Any, Any]]:
    """HGETALL of every worker whose heartbeat is recent."""
    return [h for _, _, h in await live_worker_records(client, ttl_ms)]


def missing(workers: list[dict[Any, Any]], needed: list[str]) -> list[str]:
    """What keeps `needed` streams from being served: a stream no live worker reads, no notifier."""
    served = served_streams(workers)
    reasons = [f"no live worker for stream {s}" for s in sorted(set(needed)) if s not in served]
    kinds = {_text(w.get(b"kind", w.get("kind", b""))) for w in workers}
    if NOTIFIER_KIND not in kinds:
        reasons.append("no live notifier worker")
    return reasons


@router.get(
    "/readyz",
    response_model=Readiness,
    summary="Readiness",
    description=(
        "200 when Redis answers and every stream of every pipeline (and the job events) is served "
        "by at least one live worker, by their heartbeats. Otherwise 503, naming what is missing."
    ),
    responses={503: {"model": Readiness, "description": "Not ready; `reason` says why."}},
)
async def readyz(client: RedisDep, config: ConfigDep, settings: SettingsDep) -> JSONResponse:
    try:
        workers = await live_workers(client, settings.worker_ttl_ms)
    except (RedisError, OSError) as exc:
        reason = f"redis unreachable: {exc}"
        log.warning("not ready: %s", reason)
        return JSONResponse(Readiness(status="unavailable", reason=reason).model_dump(), status_code=503)
    needed = config.cpu_streams() + list(config.model_streams().values())
    reasons = missing(workers, needed)
    if reasons:
        body = Readiness(status="unavailable", reason="; ".join(reasons), workers=len(workers))
        return JSONResponse(body.model_dump(), status_code=503)
    return JSONResponse(Readiness(status="ready", workers=len(workers)).model_dump())
