"""The FastAPI app: create_app(settings) builds it; nothing is created at import time.

The pipelines file is loaded (and its modules located, never imported: the API image has no
torch) when the app is created, so a bad file stops the API at start. The lifespan opens one
async Redis client and closes it; meanwhile it runs the deadline sweep (services/api/sweep.py)
and the job waiters that follow the events stream.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fastapi import Depends, FastAPI
from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.api import shutdown
from services.api.auth import key_digests, require_api_key, require_api_key_or_token
from services.api.drain import DrainRates
from services.api.errors import install_error_handlers
from services.api.job_events import JobEventHub
from services.api.limits import BodySizeLimit
from services.api.openapi import install_pipeline_operations
from services.api.routers import (
    docs,
    events,
    files,
    health,
    inputs,
    job_list,
    jobs,
    metrics,
    oip,
    openai_embeddings,
    pipelines,
    status,
    submit,
    ui,
    webhooks,
)
from services.api.schemas import ErrorBody
from services.api.status_series import StatusSampler
from services.api.sweep import Sweeper
from services.api.waiters import JobWaiters
from shared import redis_conn
from shared.callables import check_callables
from shared.pipeline_spec import load_pipelines
from shared.redis_checks import check_redis_async
from shared.settings import Settings

log = logging.getLogger(__name__)

RedisFactory = Callable[[str], Redis]

SWEEP_STOP_S = 15.0  # at shutdown, how long the sweep in hand may take to finish

DESCRIPTION = """\
Run deep-learning pipelines as jobs. Submit inputs to a pipeline (`POST /v1/pipelines/{name}/jobs`:
one operation per pipeline below, each with what its input kind accepts; a name that is not a
pipeline answers 404), get a job id at once, then poll `GET /v1/jobs/{id}` or receive a webhook
when it finishes. Preprocessing, batched model inference and postprocessing run in separate
workers joined by Redis streams; the API itself only validates and queues.
"""

TAGS = [
    {"name": "jobs", "description": "Submit jobs and read their status and outputs."},
    {"name": "pipelines", "description": "The pipelines this deployment runs and how to call them."},
    {"name": "health", "description": "Liveness and readiness probes."},
    {"name": "metrics", "description": "The whole stack's metrics, for Prometheus (no API key)."},
    {"name": "openai", "description": "OpenAI-compatible embeddings on text pipelines (docs/protocols.md)."},
    {
        "name": "inference protocol v2",
        "description": "The Open Inference Protocol v2 (KServe / Triton REST) on image and text pipelines.",
    },
]


def _version() -> str:
    try:
        return version("dlpipe")
    except PackageNotFoundError:
        return "0.0.0"


async def _check_redis_when_reachable(
    client: Redis, first_delay_s: float = 0.5, max_delay_s: float = 30.0
) -> None:
    """Warn loudly, once, if this Redis can evict keys or keeps nothing on disk
    (shared/redis_checks.py); Redis may come up after the API, so retry with a growing delay."""
    delay = first_delay_s
    while True:
        try:
            await check_redis_async(client, log, "(seen by the api)")
            return
        except (RedisError, OSError) as exc:
            log.debug("could not check redis yet: %s", exc)
        await asyncio.sleep(delay)
        delay = min(delay * 2, max_delay_s)


def redis_client(settings: Settings) -> Redis:
    """The API's Redis client (shared/redis_conn.py: a URL or the sentinels' primary). Bounded
    waits: a Redis that stops answering gives 503s, not hung requests. A blocking pool: a request
    that finds every connection in use waits for one (up to DLPIPE_REDIS_POOL_TIMEOUT_S); redis-py's
    default pool fails at once ("Too many connections"), which gave a third of 150 long polls a 503
    the moment their job ended. The socket timeout outlasts a WAIT (DLPIPE_REDIS_WAIT_TIMEOUT_MS)."""
    return redis_conn.async_client(
        settings,
        max_connections=settings.redis_max_connections,
        pool_timeout_s=settings.redis_pool_timeout_s,
        socket_timeout=max(10.0, settings.redis_wait_timeout_ms / 1000 + 5.0),
    )


def create_app(settings: Settings, *, redis_factory: RedisFactory | None = None) -> FastAPI:
    """Build the API for these settings; `redis_factory(url)` makes the client (tests pass fakes)."""
    if not settings.redis_configured():
        raise ValueError("settings.redis_url is not set (DLPIPE_REDIS_URL, or DLPIPE_REDIS_SENTINELS)")
    redis_url = settings.redis_url or ""
    config = load_pipelines(settings.pipelines_file)
    check_callables(config, import_them=False)
    make_client = redis_factory or (lambda _url: redis_client(settings))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = make_client(redis_url)
        app.state.redis = client
        app.state.waiters = JobWaiters(client)
        app.state.job_events = JobEventHub(client)
        app.state.stopping = shutdown.register()
        app.state.status_sampler = StatusSampler(client, config)
        log.info("api started: pipelines=%s", ",".join(sorted(config.pipelines)))
        checking = asyncio.create_task(_check_redis_when_reachable(client))
        sweeper = Sweeper(
            client,
            config.pipelines,
            ttl_s=settings.job_ttl_s,
            interval_s=settings.deadline_sweep_interval_ms / 1000,
            rates=app.state.drain_rates,
        )
        stop_sweeping = asyncio.Event()
        sweeping = asyncio.create_task(sweeper.run(stop_sweeping))
        sampling = asyncio.create_task(app.state.status_sampler.run(stop_sweeping))
        try:
            yield
        finally:
            stop_sweeping.set()
            shutdown.unregister(app.state.stopping)
            checking.cancel()
            await app.state.job_events.stop()
            await sampling
            await app.state.waiters.stop()
            try:
                await asyncio.wait_for(sweeping, SWEEP_STOP_S)
            except TimeoutError:
                log.warning("the deadline sweep did not stop within %.0fs", SWEEP_STOP_S)
            app.state.redis = None
            await client.aclose()
            log.info("api stopped")

    app = FastAPI(
        title="dlpipe",
        version=_version(),
        summary="Deep-learning pipelines as asynchronous jobs.",
        description=DESCRIPTION,
        openapi_tags=TAGS,
        lifespan=lifespan,
        docs_url=None,  # our own /docs, from vendored files (services/api/routers/docs.py)
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.config = config
    app.state.redis = None
    app.state.waiters = None
    app.state.job_events = None
    app.state.stopping = None
    app.state.status_sampler = None
    app.state.drain_rates = DrainRates()  # sampled by the sweep, read for a 429's Retry-After
    # Who may call: with DLPIPE_API_KEYS set, every /v1 route needs a key (services/api/auth.py);
    # /healthz, /readyz, /metrics, /docs, /openapi.json and the console's files (/ui/) stay open.
    app.state.api_key_digests = key_digests(settings)
    authenticated: dict[str, Any] = {
        "dependencies": [Depends(require_api_key)],
        "responses": {401: {"model": ErrorBody, "description": "No API key or a wrong one (keys are set)."}},
    }
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    install_error_handlers(app)
    app.include_router(submit.router, **authenticated)
    app.include_router(job_list.router, **authenticated)
    app.include_router(jobs.router, **authenticated)
    app.include_router(webhooks.router, **authenticated)
    # EventSource and <img src> send no headers: these take the key as `?access_token=` too.
    by_token = {**authenticated, "dependencies": [Depends(require_api_key_or_token)]}
    app.include_router(events.router, **by_token)
    app.include_router(inputs.router, **by_token)
    app.include_router(files.router, **by_token)
    app.include_router(status.router, **authenticated)
    app.include_router(pipelines.router, **authenticated)
    app.include_router(openai_embeddings.router, **authenticated)
    app.include_router(oip.router)  # its health routes open, the others keyed (services/api/routers/oip.py)
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(docs.router)
    app.include_router(ui.router)  # the browser console (/ui/), no key to load it
    install_pipeline_operations(app, config, settings)
    return app
