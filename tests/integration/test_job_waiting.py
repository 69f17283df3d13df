"""Waiting for a job's end on a real redis-server: `GET /v1/jobs/{id}?wait_s=` (a long poll) and
`Prefer: wait=N` on submit. The stages run in a thread while the request waits; the request must
come back with the final job as soon as it ends, or with the job as it is once the wait is over."""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from services.api.app import create_app
from shared.pipeline_spec import load_pipelines
from shared.settings import Settings
from tests.support.api import running, write_pipelines
from tests.support.stages_by_hand import groups_of, run_step
from workers.store import Store

pytestmark = pytest.mark.anyio

BODY = {"inputs": [{"image_base64": base64.b64encode(b"\x01\x02\x03").decode()}]}


@pytest.fixture
def settings(tmp_path: Path, redis_url: str) -> Settings:
    return Settings(
        redis_url=redis_url, pipelines_file=write_pipelines(tmp_path), job_ttl_s=600, max_wait_s=30
    )


@pytest.fixture
def store(redis_url: str, settings: Settings) -> Store:
    import redis  # noqa: PLC0415

    return Store(redis.Redis.from_url(redis_url), load_pipelines(settings.pipelines_file), settings.job_ttl_s)


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with running(create_app(settings)) as client:
        yield client


class Stages:
    """The pipeline's stages run by hand in a thread, once `go` is set, until everything is done."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.go = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        groups = groups_of(self.store)
        self.go.wait()
        while not self.stop.is_set():
            if not sum(run_step(self.store, group, streams) for group, streams in groups):
                self.stop.wait(0.01)


@pytest.fixture
def stages(store: Store) -> Iterator[Stages]:
    running_stages = Stages(store)
    running_stages.thread.start()
    yield running_stages
    running_stages.stop.set()
    running_stages.go.set()
    running_stages.thread.join(10)


async def _when_waiting(api_app_waiters: object, then: threading.Event) -> None:
    """Set `then` once a request is registered as waiting (the stages start only then)."""
    deadline = time.monotonic() + 10
    while getattr(api_app_waiters, "waiting", 0) == 0:
        assert time.monotonic() < deadline, "no request started waiting"
        await asyncio.sleep(0.005)
    then.set()


def _waiters(api: httpx.AsyncClient) -> object:
    return api._transport.app.state.waiters  # type: ignore[attr-defined]


async def test_a_long_poll_answers_as_soon_as_the_job_ends(api: httpx.AsyncClient, stages: Stages) -> None:
    job = (await api.post("/v1/pipelines/img/jobs", json=BODY)).json()
    assert job["status"] == "queued"
    started = time.monotonic()
    poll = asyncio.create_task(api.get(f"/v1/jobs/{job['id']}", params={"wait_s": 30}))
    await _when_waiting(_waiters(api), stages.go)
    response = await poll
    assert response.status_code == 200
    view = response.json()
    assert view["status"] == "succeeded", view
    assert view["outputs"][0]["result"] == {"score": 30, "index": 0}
    assert time.monotonic() - started < 30  # woken by the end, not by the wait running out
    assert _waiters(api).waiting == 0  # type: ignore[attr-defined]


async def test_a_long_poll_of_a_job_that_does_not_end_answers_after_the_wait(api: httpx.AsyncClient) -> None:
    job = (await api.post("/v1/pipelines/img/jobs", json=BODY)).json()
    started = time.monotonic()
    response = await api.get(f"/v1/jobs/{job['id']}", params={"wait_s": 0.3})
    assert response.status_code == 200 and response.json()["status"] == "queued"
    assert time.monotonic() - started >= 0.3


async def test_a_wait_longer_than_the_limit_is_cut_to_it(tmp_path: Path, redis_url: str) -> None:
    settings = Settings(redis_url=redis_url, pipelines_file=write_pipelines(tmp_path), max_wait_s=0.2)
    async with running(create_app(settings)) as api:
        job = (await api.post("/v1/pipelines/img/jobs", json=BODY)).json()
        response = await api.get(f"/v1/jobs/{job['id']}", params={"wait_s": 3600})
        assert response.status_code == 200 and response.json()["status"] == "queued"
        bad = await api.get(f"/v1/jobs/{job['id']}", params={"wait_s": -1})
        assert bad.status_code == 422 and "wait_s" in bad.text


async def test_submit_with_prefer_wait_answers_200_with_the_final_job(
    api: httpx.AsyncClient, stages: Stages
) -> None:
    submit = asyncio.create_task(api.post("/v1/pipelines/img/jobs", json=BODY, headers={"Prefer": "wait=30"}))
    await _when_waiting(_waiters(api), stages.go)
    response = await submit
    assert response.status_code == 200, response.text
    view = response.json()
    assert view["status"] == "succeeded" and view["outputs"][0]["status"] == "succeeded"
    assert response.headers["location"] == f"/v1/jobs/{view['id']}"
    assert response.headers["preference-applied"] == "wait=30"


async def test_submit_with_prefer_wait_answers_202_when_the_job_has_not_ended(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/v1/pipelines/img/jobs", json=BODY, headers={"Prefer": "respond-async, wait=0.2"}
    )
    assert response.status_code == 202 and response.json()["status"] == "queued"
    assert "preference-applied" not in response.headers


async def test_a_cancel_wakes_the_requests_waiting_for_the_job(api: httpx.AsyncClient) -> None:
    job = (await api.post("/v1/pipelines/img/jobs", json=BODY)).json()
    poll = asyncio.create_task(api.get(f"/v1/jobs/{job['id']}", params={"wait_s": 30}))
    started = time.monotonic()
    canceled = threading.Event()
    await _when_waiting(_waiters(api), canceled)
    assert (await api.post(f"/v1/jobs/{job['id']}/cancel")).status_code == 200
    response = await poll
    assert response.json()["status"] == "canceled"
    assert time.monotonic() - started < 30
