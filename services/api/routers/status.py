"""`GET /v1/status`: the whole system as JSON, for the console's System view."""

from __future__ import annotations

from fastapi import APIRouter, Request

from services.api.deps import ConfigDep, RedisDep, SettingsDep
from services.api.schemas import ErrorBody
from services.api.status import read_status
from services.api.status_schemas import SystemStatus

router = APIRouter(prefix="/v1", tags=["health"])


@router.get(
    "/status",
    response_model=SystemStatus,
    summary="System status",
    description=(
        "Everything at once: readiness with its reasons (as /readyz), each stream's live workers, "
        "backlog (lag + pending) and oldest waiting entry, each model's items/s, mean batch and duty "
        "cycle over the last minute, each pipeline's jobs/s and p50/p95 latency over the last 5 "
        "minutes (sampled by this API process every 5 s: null until it has two samples), the live "
        "workers, and Redis's memory, persistence and version. Pipelines' graphs: `GET /v1/pipelines`."
    ),
    responses={503: {"model": ErrorBody, "description": "Redis is unavailable."}},
)
async def get_status(
    request: Request, client: RedisDep, config: ConfigDep, settings: SettingsDep
) -> SystemStatus:
    return await read_status(client, config, settings.worker_ttl_ms, request.app.state.status_sampler)
