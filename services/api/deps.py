"""FastAPI dependencies: what create_app put on app.state, and pipeline lookup.

All `async def`: FastAPI runs a plain `def` dependency in its thread pool, a hop that costs
more than these lookups many times over (it was most of a small submit's CPU time).
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Depends, Path, Request
from redis.asyncio import Redis

from services.api.auth import caller_of
from services.api.waiters import JobWaiters
from shared import keys
from shared.errors import NotFound, Unavailable, shown
from shared.pipeline_spec import PipelinesConfig, PipelineSpec
from shared.settings import Settings


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_config(request: Request) -> PipelinesConfig:
    return request.app.state.config


async def get_redis(request: Request) -> Redis:
    client = getattr(request.app.state, "redis", None)
    if client is None:  # only outside the app's lifespan
        raise Unavailable("redis client not started")
    return client


async def get_waiters(request: Request) -> JobWaiters:
    waiters = getattr(request.app.state, "waiters", None)
    if waiters is None:  # only outside the app's lifespan
        raise Unavailable("redis client not started")
    return waiters


SettingsDep = Annotated[Settings, Depends(get_settings)]
ConfigDep = Annotated[PipelinesConfig, Depends(get_config)]
RedisDep = Annotated[Redis, Depends(get_redis)]
WaitersDep = Annotated[JobWaiters, Depends(get_waiters)]


async def get_pipeline(
    config: ConfigDep,
    name: Annotated[str, Path(description="The pipeline's name.", examples=["image-classify"])],
) -> PipelineSpec:
    pipeline = config.pipelines.get(name)
    if pipeline is None:
        known = ", ".join(sorted(config.pipelines))
        raise NotFound(f"no pipeline {shown(name)} (known: {known})")
    return pipeline


PipelineDep = Annotated[PipelineSpec, Depends(get_pipeline)]

_JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # what a job id can look like (POST .../jobs makes them)

JobIdPath = Annotated[str, Path(description="The id `POST .../jobs` returned.")]


def check_job_id(job_id: str) -> None:
    """404 for an id no job can have, before asking Redis."""
    if not _JOB_ID.match(job_id):
        raise NotFound(f"no job {shown(job_id)}")


async def owned_job(request: Request, client: RedisDep, job_id: JobIdPath) -> str:
    """The path's job id, when the caller may see that job; else 404 exactly as for an unknown id.
    With API keys set, a job is its submitter's (the job hash's `owner`, a key's id): another key's
    job does not exist for the caller. Without keys, every job is everyone's (no round trip)."""
    check_job_id(job_id)
    if request.app.state.api_key_digests:
        owner = await client.hget(keys.job(job_id), "owner")
        if owner is None or (owner.decode() if isinstance(owner, bytes) else owner) != caller_of(request):
            raise NotFound(f"no job {shown(job_id)}")
    return job_id


OwnedJobId = Annotated[str, Depends(owned_job)]
