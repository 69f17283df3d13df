"""GET /metrics: Prometheus's scrape target for the whole stack (services/api/metrics.py).

Open, like /healthz: DLPIPE_API_KEYS do not cover it (a scraper is infrastructure, not a
caller of /v1; it shows counts and names from the pipelines file, never job ids, inputs or
results). Keep it off public networks, or put it behind your proxy's auth (docs/security.md).
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from services.api.deps import ConfigDep, RedisDep, SettingsDep, WaitersDep
from services.api.metrics import read_snapshot, render
from services.api.schemas import ErrorBody

router = APIRouter(tags=["metrics"])

_TEXT = {"schema": {"type": "string"}}


@router.get(
    "/metrics",
    summary="Metrics (Prometheus)",
    description=(
        "The whole stack's metrics, read from Redis at each scrape: backlog per stream and "
        "pipeline, items and jobs by final status, stage time and queue wait histograms, model "
        "batch sizes and busy time, webhook attempts by outcome, live workers. Prometheus text "
        "format (0.0.4), or OpenMetrics when the `Accept` header asks for it. No API key needed."
    ),
    response_class=Response,
    responses={
        200: {
            "description": "The metrics, one sample per line.",
            "content": {"text/plain": _TEXT, "application/openmetrics-text": _TEXT},
        },
        503: {"model": ErrorBody, "description": "Redis unavailable."},
    },
)
async def get_metrics(
    request: Request, client: RedisDep, config: ConfigDep, settings: SettingsDep, waiters: WaitersDep
) -> Response:
    snapshot = await read_snapshot(client, config, settings.worker_ttl_ms)
    snapshot.waiting_requests = waiters.waiting
    body, content_type = render(snapshot, request.headers.get("accept"))
    return Response(body, media_type=content_type)
