"""The API on a real redis-server: a submitted job is what the workers read, and reads back done."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import redis

from services.api.app import create_app
from shared import keys
from shared.heartbeat import add_heartbeat
from shared.messages import now_ms
from shared.pipeline_spec import load_pipelines
from shared.settings import Settings
from tests.support.api import running, write_pipelines
from tests.support.stages_by_hand import groups_of, run_stage, run_step
from workers.store import Store

pytestmark = pytest.mark.anyio

IMAGES = [b"\x00" * 5, b"\x01" * 17, b"\x02" * 2]


@pytest.fixture
def settings(tmp_path: Path, redis_url: str) -> Settings:
    return Settings(redis_url=redis_url, pipelines_file=write_pipelines(tmp_path), job_ttl_s=600)


@pytest.fixture
def store(redis_client: redis.Redis, settings: Settings) -> Store:
    return Store(redis_client, load_pipelines(settings.pipelines_file), ttl_s=settings.job_ttl_s)


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with running(create_app(settings)) as client:
        yield client


async def test_a_job_submitted_through_the_api_is_run_by_the_stages(
    api: httpx.AsyncClient, store: Store, redis_client: redis.Redis
) -> None:
    body = {"inputs": [{"image_base64": base64.b64encode(i).decode()} for i in IMAGES], "metadata": {"t": 1}}
    response = await api.post("/v1/pipelines/img/jobs", json=body)
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    assert response.headers["location"] == f"/v1/jobs/{job_id}"
    groups = groups_of(store)

    # What a preprocess worker reads: one entry per input on the first stage, each with its input.
    cpu_group, cpu_streams = groups[0]
    entries = store.read(cpu_group, "test", cpu_streams, count=100, block_ms=None)
    assert [(e.stream, e.item.job_id, e.item.index, e.item.stage) for e in entries] == [
        (keys.stream("cpu.img.pre"), job_id, i, "pre") for i in range(len(IMAGES))
    ]
    assert store.load(entries) == [[{"image": image}] for image in IMAGES]
    assert redis_client.ttl(keys.job(job_id)) > 0

    # One item through the first stage: the job reads back running, the rest still pending.
    store.complete(cpu_group, [run_stage(entries[1], [{"image": IMAGES[1]}])])
    view = (await api.get(f"/v1/jobs/{job_id}")).json()
    assert view["status"] == "running" and view["progress"] == {"done": 0, "total": 3}
    store.complete(
        cpu_group, [run_stage(e, [{"image": IMAGES[e.item.index]}]) for e in (entries[2], entries[0])]
    )

    while sum(run_step(store, group, streams) for group, streams in groups):
        pass

    response = await api.get(f"/v1/jobs/{job_id}")
    assert response.status_code == 200
    view = response.json()
    assert view["status"] == "succeeded" and view["progress"] == {"done": 3, "total": 3}
    assert view["outputs"] == [
        {
            "index": i,
            "status": "succeeded",
            "result": {"score": len(image) * 10, "index": i},
            "error": None,
            "source": None,
        }
        for i, image in enumerate(IMAGES)
    ]
    assert view["metadata"] == {"t": 1} and view["completed_at"] is not None


async def test_multipart_job_reaches_the_workers_with_its_files(api: httpx.AsyncClient, store: Store) -> None:
    files = [("files", (f"{i}.jpg", image, "image/jpeg")) for i, image in enumerate(IMAGES[:2])]
    response = await api.post(
        "/v1/pipelines/img/jobs", files=files, data={"webhook": "https://hooks.example.com/h"}
    )
    assert response.status_code == 202, response.text
    cpu_group, cpu_streams = groups_of(store)[0]
    entries = store.read(cpu_group, "test", cpu_streams, count=100, block_ms=None)
    assert [e.item.job_id for e in entries] == [response.json()["id"]] * 2
    assert store.load(entries) == [[{"image": IMAGES[0]}], [{"image": IMAGES[1]}]]


async def test_readyz_on_real_redis(api: httpx.AsyncClient, store: Store, redis_client: redis.Redis) -> None:
    response = await api.get("/readyz")
    assert response.status_code == 503 and "model.m1" in response.json()["reason"]
    config = store.config
    pipe = redis_client.pipeline()
    every = [s for stage in config.cpu_streams() for s in keys.stage_streams(stage)]  # all priorities
    add_heartbeat(pipe, "w-cpu", "preprocess", every, now_ms(), 10_000)
    every = [s for model in config.model_streams().values() for s in keys.stage_streams(model)]
    add_heartbeat(pipe, "w-model", "model", every, now_ms(), 10_000)
    add_heartbeat(pipe, "w-notify", "notifier", [keys.EVENTS], now_ms(), 10_000)
    pipe.execute()
    response = await api.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json()["workers"] == 3
