"""The console's routes on a real redis-server: the job list and its index, a job's events (SSE),
its kept inputs, and the system status."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from services.api.app import create_app
from shared import keys
from shared.heartbeat import add_heartbeat
from shared.messages import WorkItem, now_ms
from shared.pipeline_spec import load_pipelines
from shared.settings import Settings
from tests.support.api import write_pipelines
from tests.support.sse import Event, collect_until, read_events, served
from tests.support.stages_by_hand import groups_of, run_step
from workers.store import Entry, StageResult, Store

pytestmark = pytest.mark.anyio

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 20


def _body(n: int = 3, **extra: Any) -> dict[str, Any]:
    return {
        "inputs": [{"image_base64": base64.b64encode(PNG + bytes([i])).decode()} for i in range(n)],
        **extra,
    }


@pytest.fixture
def settings(tmp_path: Path, redis_url: str) -> Settings:
    return Settings(
        redis_url=redis_url, pipelines_file=write_pipelines(tmp_path), job_ttl_s=600, sse_keepalive_s=30
    )


@pytest.fixture
def store(redis_client: redis.Redis, settings: Settings) -> Store:
    return Store(redis_client, load_pipelines(settings.pipelines_file), ttl_s=settings.job_ttl_s)


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with served(create_app(settings)) as client:
        yield client


def finish(store: Store, job_id: str, index: int) -> None:
    """Item `index` of an `img` job ends as its last stage would end it (COMPLETE_STAGE)."""
    item = WorkItem(job_id=job_id, index=index, pipeline="img", stage="post")
    entry = Entry(stream=keys.stream("cpu.img.post"), entry_id="0-1", item=item)
    store.complete(keys.CPU_GROUP, [StageResult(entry, value={"n": index})])


async def submit(api: httpx.AsyncClient, n: int = 3, **extra: Any) -> str:
    response = await api.post("/v1/pipelines/img/jobs", json=_body(n, **extra))
    assert response.status_code == 202, response.text
    return response.json()["id"]


# -- the list ----------------------------------------------------------------------------


async def test_jobs_list_newest_first_with_filters_and_pages(api: httpx.AsyncClient, store: Store) -> None:
    ids = [await submit(api, 1, metadata={"n": n}) for n in range(5)]
    first = (await api.get("/v1/jobs", params={"limit": 2})).json()
    assert [j["id"] for j in first["jobs"]] == ids[::-1][:2]
    assert first["jobs"][0] == {
        **first["jobs"][0],
        "pipeline": "img",
        "status": "queued",
        "progress": {"done": 0, "total": 1},
        "completed_at": None,
        "metadata": {"n": 4},
    }
    rest, cursor = [], first["next_cursor"]
    while cursor:
        page = (await api.get("/v1/jobs", params={"limit": 2, "cursor": cursor})).json()
        rest += [j["id"] for j in page["jobs"]]
        cursor = page["next_cursor"]
    assert rest == ids[::-1][2:]
    finish(store, ids[1], 0)
    done = (await api.get("/v1/jobs", params={"status": "succeeded"})).json()["jobs"]
    assert [j["id"] for j in done] == [ids[1]] and done[0]["completed_at"] is not None
    queued = (await api.get("/v1/jobs", params={"status": "queued", "pipeline": "img"})).json()["jobs"]
    assert ids[1] not in [j["id"] for j in queued] and len(queued) == 4
    assert (await api.get("/v1/jobs", params={"pipeline": "nope"})).json() == {
        "jobs": [],
        "next_cursor": None,
    }
    for bad in ({"limit": 0}, {"limit": 201}, {"status": "lost"}, {"cursor": "!!"}):
        assert (await api.get("/v1/jobs", params=bad)).status_code == 422, bad


async def test_an_expired_job_leaves_the_index(api: httpx.AsyncClient, redis_client: redis.Redis) -> None:
    ids = [await submit(api, 1) for _ in range(3)]
    redis_client.delete(keys.job(ids[1]))  # its TTL ran out
    listed = (await api.get("/v1/jobs")).json()["jobs"]
    assert [j["id"] for j in listed] == [ids[2], ids[0]]
    assert redis_client.zscore(keys.job_index("anon"), ids[1]) is None
    # Members older than any job can be are trimmed by score, by the listing and by the sweep.
    redis_client.zadd(keys.job_index("anon", "img"), {"ancient": 1})
    app_list = (await api.get("/v1/jobs", params={"pipeline": "img"})).json()["jobs"]
    assert "ancient" not in [j["id"] for j in app_list]
    assert redis_client.zscore(keys.job_index("anon", "img"), "ancient") is None


# -- events ------------------------------------------------------------------------------


async def test_events_follow_a_job_as_its_items_end(api: httpx.AsyncClient, store: Store) -> None:
    job_id = await submit(api)
    async with api.stream("GET", f"/v1/jobs/{job_id}/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = read_events(response.aiter_lines())
        [progress] = await collect_until(events, "progress")
        assert isinstance(progress, Event) and progress.data == {"done": 0, "total": 3}
        await asyncio.to_thread(finish, store, job_id, 1)
        output, progress = await collect_until(events, "progress")
        assert isinstance(output, Event) and output.event == "output" and output.id
        assert output.data["index"] == 1 and output.data["result"] == {"n": 1}
        assert progress.data == {"done": 1, "total": 3}  # type: ignore[union-attr]
        await asyncio.to_thread(finish, store, job_id, 0)
        await asyncio.to_thread(finish, store, job_id, 2)
        rest = await collect_until(events, "completed")
        outputs = [e.data["index"] for e in rest if isinstance(e, Event) and e.event == "output"]
        assert sorted(outputs) == [0, 2]
        completed = rest[-1]
        assert isinstance(completed, Event) and completed.data["status"] == "succeeded"
        assert [o["result"] for o in completed.data["outputs"]] == [{"n": 0}, {"n": 1}, {"n": 2}]
        assert [e async for e in events] == []  # the stream ends after `completed`


async def test_a_late_client_gets_what_it_missed_and_can_resume(api: httpx.AsyncClient, store: Store) -> None:
    job_id = await submit(api)
    finish(store, job_id, 2)
    async with api.stream("GET", f"/v1/jobs/{job_id}/events") as response:
        output, progress = await collect_until(read_events(response.aiter_lines()), "progress")
    assert isinstance(output, Event) and output.data["index"] == 2 and output.data["status"] == "succeeded"
    assert isinstance(progress, Event) and progress.data == {"done": 1, "total": 3} and progress.id
    finish(store, job_id, 0)
    headers = {"Last-Event-ID": progress.id}
    async with api.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers) as response:
        events = read_events(response.aiter_lines())
        seen = await collect_until(events, "progress")
        assert [e.data["index"] for e in seen if isinstance(e, Event) and e.event == "output"] == [0]
        finish(store, job_id, 1)
        rest = await collect_until(events, "completed")
        assert [e.data["index"] for e in rest if isinstance(e, Event) and e.event == "output"] == [1]
    async with api.stream("GET", f"/v1/jobs/{job_id}/events") as response:  # ended: completed at once
        [completed] = [e async for e in read_events(response.aiter_lines())]
    assert isinstance(completed, Event) and completed.event == "completed" and completed.data["id"] == job_id


async def test_a_cancel_completes_the_stream_and_quiet_streams_get_keep_alives(
    tmp_path: Path, redis_url: str
) -> None:
    settings = Settings(redis_url=redis_url, pipelines_file=write_pipelines(tmp_path), sse_keepalive_s=0.1)
    async with served(create_app(settings)) as api:
        job_id = await submit(api)
        async with api.stream(
            "GET", f"/v1/jobs/{job_id}/events", params={"last_event_id": "junk"}
        ) as response:
            events = read_events(response.aiter_lines())
            await collect_until(events, "progress")
            comment = await asyncio.wait_for(events.__anext__(), 20)
            assert comment == ": keep-alive"
            assert (await api.post(f"/v1/jobs/{job_id}/cancel")).status_code == 200
            completed = (await collect_until(events, "completed"))[-1]
            assert isinstance(completed, Event) and completed.data["status"] == "canceled"
        assert (await api.get("/v1/jobs/0123/events")).status_code == 404


# -- kept inputs -----------------------------------------------------------------------


async def test_kept_inputs_come_back_as_sent(
    api: httpx.AsyncClient, store: Store, redis_client: redis.Redis
) -> None:
    body = _body(2, keep_inputs=True)
    body["inputs"].append({"image_url": "https://example.com/a.jpg"})
    response = await api.post("/v1/pipelines/img/jobs", json=body)
    job_id = response.json()["id"]
    got = await api.get(f"/v1/jobs/{job_id}/inputs/1")
    assert got.status_code == 200 and got.content == PNG + b"\x01"
    assert got.headers["content-type"] == "image/png" and got.headers["x-content-type-options"] == "nosniff"
    url_input = await api.get(f"/v1/jobs/{job_id}/inputs/2")
    assert url_input.status_code == 404 and "URL" in url_input.json()["detail"]
    outside = await api.get(f"/v1/jobs/{job_id}/inputs/3")
    assert outside.status_code == 404 and "has 3 inputs" in outside.json()["detail"]
    for index in range(3):  # the job ends: the inputs stay, with the job's TTL
        finish(store, job_id, index)
    assert (await api.get(f"/v1/jobs/{job_id}/inputs/0")).content == PNG + b"\x00"
    assert 0 < redis_client.ttl(keys.job_inputs(job_id)) <= 600
    not_kept = await submit(api, 1)
    refused = await api.get(f"/v1/jobs/{not_kept}/inputs/0")
    assert refused.status_code == 404 and "keep_inputs" in refused.json()["detail"]
    assert (await api.post("/v1/pipelines/img/jobs", json=_body(1, keep_inputs="yes"))).status_code == 422
    text = await api.post(
        "/v1/pipelines/img/jobs",
        files={"files": ("a.txt", b"hello", "text/plain")},
        data={"keep_inputs": "true"},
    )
    assert (
        (await api.get(f"/v1/jobs/{text.json()['id']}/inputs/0"))
        .headers["content-type"]
        .startswith("text/plain")
    )


# -- status ------------------------------------------------------------------------------


async def test_status_shows_streams_workers_rates_and_redis(
    api: httpx.AsyncClient, store: Store, redis_client: redis.Redis
) -> None:
    groups = groups_of(store)
    job_id = await submit(api, 2)
    before = await api.get("/v1/status")
    assert before.status_code == 200, before.text
    status = before.json()
    assert status["ready"] is False and any("no live worker" in r for r in status["reasons"])
    pre = next(s for s in status["streams"] if s["stream"] == "cpu.img.pre")
    assert (pre["pipeline"], pre["stage"], pre["model"], pre["lag"], pre["backlog"]) == (
        "img",
        "pre",
        None,
        2,
        2,
    )
    assert pre["oldest_age_ms"] is not None and pre["oldest_age_ms"] >= 0
    model = next(s for s in status["streams"] if s["stream"] == "model.m1")
    assert model["model"] == "m1" and model["pipeline"] is None and model["oldest_age_ms"] is None
    assert status["redis"]["version"] and status["redis"]["used_memory"] > 0
    assert status["pipelines"] == [
        {"pipeline": "img", "jobs_per_s": None, "p50_ms": None, "p95_ms": None, "backlog": 2}
    ]
    sampler = api.app.state.status_sampler  # type: ignore[attr-defined]
    await sampler.sample_once()
    while sum(run_step(store, g, s) for g, s in groups):
        pass
    redis_client.hincrby(keys.model_stats("m1"), "items", 2)
    redis_client.hincrby(keys.model_stats("m1"), "batches", 1)
    add_heartbeat(redis_client, "w1", "preprocess", ["cpu.img.pre"], now_ms(), 10_000)
    later = sampler.clock() + 10
    sampler.clock = lambda: later  # the next sample, 10 s on
    await sampler.sample_once()
    status = (await api.get("/v1/status")).json()
    [pipeline] = status["pipelines"]
    assert pipeline["jobs_per_s"] > 0 and pipeline["p50_ms"] is not None and pipeline["backlog"] == 0
    [m1] = status["models"]
    assert m1["items_per_s"] > 0 and m1["mean_batch"] == 2
    assert [w["id"] for w in status["workers"]] == ["w1"]
    assert next(s for s in status["streams"] if s["stream"] == "cpu.img.pre")["workers"] == 1
    assert (await api.get(f"/v1/jobs/{job_id}")).json()["status"] == "succeeded"
