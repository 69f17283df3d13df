"""video-classify on a real redis-server, stage by stage: the API expands a video into frame
items, the real preprocess worker's steps decode each frame (an upload read from the job's
one stored copy), the model stage runs the real EfficientNet-Lite0 on a batch that mixes
video frames with another job's photo, and the job shows one output per video, keyed by
frame time."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis
import torch

from services.api.app import create_app
from shared import keys
from shared.messages import JobStatus, JobView
from shared.pipeline_spec import PipelinesConfig, load_pipelines
from shared.settings import Settings
from tests.stagefns import job_view
from tests.support.api import running
from tests.support.photos import photo_bytes
from tests.support.videos import cat_then_coffee
from workers.models.efficientnet_lite import EfficientNetLite0
from workers.preprocess import PreprocessWorker
from workers.store import StageResult, Store
from workers.transforms import image

pytestmark = pytest.mark.anyio

CAT_CLASSES = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE_CLASSES = {967, 968}  # espresso, cup
MODEL_STREAM = keys.model_stream_name("efficientnet_lite0")
FRAME_STREAM = keys.cpu_stream_name("video-classify", "frame")


@pytest.fixture
def settings(tmp_path: Path, redis_url: str) -> Iterator[Settings]:
    root = tmp_path / "inputs"
    (root / "clips").mkdir(parents=True)
    (root / "clips" / "scene.mp4").write_bytes(cat_then_coffee())
    yield Settings(redis_url=redis_url, data_root=root, job_ttl_s=600)  # the real pipelines file
    image.configure(None)


@pytest.fixture
def config(settings: Settings) -> PipelinesConfig:
    return load_pipelines(settings.pipelines_file)


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with running(create_app(settings)) as client:
        yield client


@pytest.fixture(scope="module")
def model() -> EfficientNetLite0:
    model = EfficientNetLite0()
    model.load(torch.device("cpu"))
    return model


async def submit(api: httpx.AsyncClient, pipeline: str, **request: Any) -> dict[str, Any]:
    response = await api.post(f"/v1/pipelines/{pipeline}/jobs", **request)
    assert response.status_code == 202, response.text
    return response.json()


def gets(client: redis.Redis) -> int:
    return int(client.info("commandstats").get("cmdstat_get", {}).get("calls", 0))


def model_step(store: Store, model: EfficientNetLite0, count: int = 64) -> list[str]:
    """What the model worker does, by hand: one batch off the shared stream. Returns the
    pipelines of the items it held."""
    entries = store.read(keys.MODEL_GROUP, "model-video", [MODEL_STREAM], count, None)
    if not entries:
        return []
    values = store.load(entries)
    assert all(v is not None for v in values)
    with torch.inference_mode():
        rows = model.split(model.predict(model.collate([v[0] for v in values])))  # type: ignore[index]
    store.complete(keys.MODEL_GROUP, [StageResult(e, value=np.asarray(r)) for e, r in zip(entries, rows)])
    return [e.item.pipeline for e in entries]


def run_jobs(
    store: Store, cpu: PreprocessWorker, model: EfficientNetLite0, client: redis.Redis, job_ids: list[str]
) -> list[list[str]]:
    """CPU steps until nothing is left, then a model batch, until every job is final. Returns
    the pipelines of each model batch."""
    batches: list[list[str]] = []
    for _ in range(50):
        if all(job_view(client, j).status.is_final for j in job_ids):
            return batches
        while cpu.run_once(block_ms=1):
            pass
        batch = model_step(store, model)
        if batch:
            batches.append(batch)
    raise AssertionError("the jobs stopped moving")


def top1(result: dict[str, Any]) -> int:
    return result["labels"][0]["index"]


def frames_of(view: JobView, index: int = 0) -> dict[str, Any]:
    output = view.outputs[index]
    assert output.status.value == "succeeded", output
    return output.result["frames"]


async def test_video_frames_run_as_items_and_batch_with_other_jobs_images(
    api: httpx.AsyncClient,
    settings: Settings,
    config: PipelinesConfig,
    redis_client: redis.Redis,
    model: EfficientNetLite0,
) -> None:
    clip = {"video_path": "clips/scene.mp4", "interval": {"start": 0, "end": 3}, "fps": 2}
    by_path = await submit(api, "video-classify", json={"inputs": [clip]})
    uploaded = await submit(
        api,
        "video-classify",
        files=[("files", ("scene.mp4", cat_then_coffee()))],
        data={"options": json.dumps({"interval": {"start": 0.5}, "fps": 1})},
    )
    photo = await submit(api, "image-classify", files=[("files", ("coffee.jpg", photo_bytes("coffee.png")))])
    assert by_path["progress"] == {"done": 0, "total": 6} and uploaded["progress"] == {"done": 0, "total": 3}

    store = Store(redis_client, config, settings.job_ttl_s)
    cpu = PreprocessWorker(store, settings, "cpu-video")  # configures the stage modules: the data root
    cpu.setup()
    store.ensure_groups([MODEL_STREAM], keys.MODEL_GROUP)
    batches = run_jobs(store, cpu, model, redis_client, [by_path["id"], uploaded["id"], photo["id"]])

    # Frames of both videos and the photo shared the first model batch.
    assert sorted(batches[0]) == ["image-classify"] + ["video-classify"] * 9

    view = job_view(redis_client, by_path["id"])
    assert view.status == JobStatus.succeeded and view.progress.done == view.progress.total == 6
    (output,) = view.outputs
    assert output.source == "clips/scene.mp4" and output.result["errors"] == {}
    frames = frames_of(view)
    assert list(frames) == ["0.000", "0.500", "1.000", "1.500", "2.000", "2.500"]
    assert all(top1(frames[k]) in CAT_CLASSES for k in ("0.000", "0.500", "1.000")), frames
    assert all(top1(frames[k]) in COFFEE_CLASSES for k in ("1.500", "2.000", "2.500")), frames

    view = job_view(redis_client, uploaded["id"])
    assert view.status == JobStatus.succeeded and view.outputs[0].source == "scene.mp4"
    frames = frames_of(view)
    assert list(frames) == ["0.500", "1.500", "2.500"]
    assert top1(frames["0.500"]) in CAT_CLASSES and top1(frames["2.500"]) in COFFEE_CLASSES

    assert top1(job_view(redis_client, photo["id"]).outputs[0].result) in COFFEE_CLASSES
    # Finished items are deleted; the stored upload stays until the job's TTL.
    assert not redis_client.keys(f"dlpipe:item:{uploaded['id']}:*")
    assert redis_client.get(keys.job_blob(uploaded["id"], 0)) == cat_then_coffee()


async def test_the_upload_is_read_once_per_step_and_an_expired_one_fails_its_frames(
    api: httpx.AsyncClient,
    settings: Settings,
    config: PipelinesConfig,
    redis_client: redis.Redis,
) -> None:
    store = Store(redis_client, config, settings.job_ttl_s)
    store.ensure_groups([FRAME_STREAM], keys.CPU_GROUP)
    job = await submit(api, "video-classify", files=[("files", ("scene.mp4", cat_then_coffee()))])
    entries = store.read(keys.CPU_GROUP, "cpu-peek", [FRAME_STREAM], 8, None)
    assert [e.item.index for e in entries] == [0, 1, 2]
    before = gets(redis_client)
    loaded = store.load(entries)
    assert gets(redis_client) - before == 1  # three frames, one read of the video
    inputs = [v[0] for v in loaded]  # type: ignore[index]
    assert inputs == [{"t": t, "blob": cat_then_coffee()} for t in (0.0, 1.0, 2.0)]

    by_path = await submit(api, "video-classify", json={"inputs": [{"video_path": "clips/scene.mp4"}]})
    path_entries = store.read(keys.CPU_GROUP, "cpu-peek", [FRAME_STREAM], 8, None)
    before = gets(redis_client)
    assert [v[0] for v in store.load(path_entries)] == [  # type: ignore[index]
        {"video_path": "clips/scene.mp4", "t": t} for t in (0.0, 1.0, 2.0)
    ]
    assert gets(redis_client) == before  # no blob: no extra round trip
    assert by_path["progress"]["total"] == 3

    # The stored video is gone (expired): each frame fails, saying so, and the job finishes.
    redis_client.delete(keys.job_blob(job["id"], 0))
    cpu = PreprocessWorker(store, settings, "cpu-peek")
    cpu.process(entries)
    view = job_view(redis_client, job["id"])
    assert view.status == JobStatus.failed and view.progress.done == 3
    (output,) = view.outputs
    assert output.status.value == "failed" and output.error is not None
    assert output.error.startswith("all 3 frames failed (0.000: input has no video bytes")
    assert set(output.result["errors"]) == {"0.000", "1.000", "2.000"}
