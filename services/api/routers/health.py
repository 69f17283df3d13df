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


async def live_workers(client: Any, ttl_ms: int) -> list[dict[Any, Any]]:
    """HGETALL of every worker whose heartbeat is recent (PING first, so a dead Redis says so)."""
    await client.ping()
    ids = await client.zrangebyscore(keys.WORKERS, live_since(now_ms(), ttl_ms), "+inf")
    if not ids:
        return []
    async with client.pipeline(transaction=False) as pipe:
        for worker_id in ids:
            pipe.hgetall(keys.worker(_text(worker_id)))
        hashes = await pipe.execute()
    return [h for h in hashes if h]  # a hash gone (expired) is a worker gone


def _missing(workers: list[dict[Any, Any]], needed: list[str]) -> list[str]:
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
    needed = config.work_streams()  # every priority's stream too
    reasons = _missing(workers, needed)
    if reasons:
        body = Readiness(status="unavailable", reason="; ".join(reasons), workers=len(workers))
        return JSONResponse(body.model_dump(), status_code=503)
    return JSONResponse(Readiness(status="ready", workers=len(workers)).model_dump())
