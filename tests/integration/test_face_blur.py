"""face-blur and video-blur on a real redis-server, through the real workers' steps: the API takes
the job, a preprocess worker and a model worker (MTCNN's three real networks, loaded once for
the module) run its eleven stages, COMPLETE_STAGE stores the JPEG with the output, and the API
serves it. Also the bad cases, on real Redis: a file over DLPIPE_MAX_OUTPUT_FILE_BYTES, and a
result naming a file it did not write, each failing its item with the reason."""

from __future__ import annotations

import io
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis
from PIL import Image

from services.api.app import create_app
from shared import keys
from shared.pipeline_spec import PipelinesConfig, load_pipelines
from shared.settings import Settings
from tests.stagefns import job_view
from tests.support.api import running, write_pipelines
from tests.support.faces import HEAD, overlap
from tests.support.output_files import CAP, PIPELINES, assert_expire_together
from tests.support.photos import photo_bytes, photo_rgb
from tests.support.videos import astronaut_then_coffee
from workers.model_worker import ModelWorker
from workers.models.base import Model
from workers.preprocess import PreprocessWorker
from workers.store import Store

pytestmark = pytest.mark.anyio


@pytest.fixture
def settings(redis_url: str) -> Settings:
    return Settings(redis_url=redis_url, job_ttl_s=600, read_block_ms=1)  # the real pipelines file


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with running(create_app(settings)) as client:
        yield client


def workers(
    client: redis.Redis,
    settings: Settings,
    bundled_config: PipelinesConfig,
    mtcnn_nets: dict[str, Model],
    max_file_bytes: int = 16 << 20,
) -> list[Any]:
    store = Store(client, bundled_config, settings.job_ttl_s, max_file_bytes)
    steps = [
        PreprocessWorker(store, settings, "cpu-blur"),
        ModelWorker(store, settings, "gpu-blur", mtcnn_nets),
    ]
    for worker in steps:
        worker.setup()
    return steps


def run_until_final(client: redis.Redis, job_id: str, steps: list[Any], timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while not job_view(client, job_id).status.is_final:
        assert time.monotonic() < deadline, f"job {job_id} did not finish in {timeout_s} s"
        for worker in steps:
            worker.run_once(block_ms=1)


async def submit(api: httpx.AsyncClient, pipeline: str, **request: Any) -> str:
    response = await api.post(f"/v1/pipelines/{pipeline}/jobs", **request)
    assert response.status_code == 202, response.text
    return response.json()["id"]


async def served_image(api: httpx.AsyncClient, described: dict[str, Any]) -> np.ndarray:
    response = await api.get(described["url"])
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/jpeg" == described["content_type"]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert int(response.headers["content-length"]) == described["size"]
    return np.asarray(Image.open(io.BytesIO(response.content), formats=["JPEG"]).convert("RGB"), dtype=int)


RunJob = Callable[..., Awaitable[tuple[str, dict[str, Any]]]]


@pytest.fixture
def run_job(
    api: httpx.AsyncClient,
    settings: Settings,
    bundled_config: PipelinesConfig,
    mtcnn_nets: dict[str, Model],
    redis_client: redis.Redis,
) -> RunJob:
    """`await run_job(pipeline, **request)`: the job submitted through the API and run through
    the workers' steps (output files capped at `max_file_bytes`) until it is final; its id and
    its GET /v1/jobs/{id}."""

    async def run(
        pipeline: str, max_file_bytes: int = 16 << 20, **request: Any
    ) -> tuple[str, dict[str, Any]]:
        job_id = await submit(api, pipeline, **request)
        steps = workers(redis_client, settings, bundled_config, mtcnn_nets, max_file_bytes)
        run_until_final(redis_client, job_id, steps)
        return job_id, (await api.get(f"/v1/jobs/{job_id}")).json()

    return run


def mean_diff(a: np.ndarray, b: np.ndarray, region: tuple[int, int, int, int]) -> float:
    x1, y1, x2, y2 = region
    return float(np.abs(a[y1:y2, x1:x2].astype(int) - b[y1:y2, x1:x2].astype(int)).mean())


async def test_the_served_jpeg_has_the_face_blurred_and_the_rest_as_it_was(
    api: httpx.AsyncClient, run_job: RunJob, redis_client: redis.Redis
) -> None:
    photos = [(name, photo_bytes(name, fmt=None)) for name in ("astronaut.png", "coffee.png")]
    job_id, job = await run_job("face-blur", files=[("files", photo) for photo in photos])
    assert job["status"] == "succeeded", job
    astronaut, coffee = (output["result"] for output in job["outputs"])
    (face,) = astronaut["faces"]
    assert overlap(face["box"], HEAD) > 0.8 and astronaut["boxes"] == [face["box"]]
    (described,) = astronaut["files"]
    assert described["name"] == "blurred.jpg"
    assert described["url"] == f"/v1/jobs/{job_id}/outputs/0/files/blurred.jpg"
    served, original = await served_image(api, described), np.asarray(photo_rgb("astronaut.png"), dtype=int)
    assert served.shape == original.shape and astronaut["size"] == [512, 512]
    x1, y1, x2, y2 = (int(v) for v in face["box"])
    face_diff = mean_diff(served, original, (x1 + 5, y1 + 5, x2 - 5, y2 - 5))
    far_diff = mean_diff(served, original, (20, 400, 120, 500))  # the lower left: the suit, the flag
    assert face_diff > 15 and far_diff < 6, (face_diff, far_diff)  # far: the JPEG's own loss only
    assert coffee["faces"] == [] and coffee["size"] == list(photo_rgb("coffee.png").size)
    (described,) = coffee["files"]
    served, original = await served_image(api, described), np.asarray(photo_rgb("coffee.png"), dtype=int)
    assert served.shape == original.shape and np.abs(served - original).mean() < 4  # no face: unchanged
    # The files live in the job's files hash, expiring with its outputs.
    assert redis_client.hlen(keys.job_files(job_id)) == 2
    assert_expire_together(redis_client, keys.job_files(job_id), keys.job_outputs(job_id))


async def test_video_blur_gives_each_frame_its_jpeg(api: httpx.AsyncClient, run_job: RunJob) -> None:
    job_id, job = await run_job(
        "video-blur",
        files=[("files", ("scene.mp4", astronaut_then_coffee()))],
        data={"options": json.dumps({"fps": 1})},
    )
    assert job["status"] == "succeeded", job
    frames = job["outputs"][0]["result"]["frames"]
    assert list(frames) == ["0.000", "1.000", "2.000"]
    assert [len(frames[t]["faces"]) for t in frames] == [1, 1, 0]  # the astronaut until 1.5 s, then coffee
    for index, (t, frame) in enumerate(frames.items()):
        (described,) = frame["files"]
        assert described["name"] == f"frame-{t}.jpg"
        # The frame's item: index 0, 1, 2 (the job's one output is the video's).
        assert described["url"] == f"/v1/jobs/{job_id}/outputs/{index}/files/frame-{t}.jpg"
        assert (await served_image(api, described)).shape == (240, 320, 3) and frame["size"] == [320, 240]


async def test_a_jpeg_over_the_cap_fails_its_item_with_the_reason(
    api: httpx.AsyncClient, run_job: RunJob, redis_client: redis.Redis
) -> None:
    photo = ("a.png", photo_bytes("astronaut.png", fmt=None))
    job_id, job = await run_job("face-blur", max_file_bytes=10_000, files=[("files", photo)])
    assert job["status"] == "failed" and job["error"] == "all 1 items failed"
    (output,) = job["outputs"]
    assert output["status"] == "failed" and output["result"] is None
    assert output["error"].startswith("stage 'blur': file 'blurred.jpg' is ")
    assert output["error"].endswith(
        " bytes, over the 10000-byte cap on an output file (DLPIPE_MAX_OUTPUT_FILE_BYTES)"
    )
    assert not redis_client.exists(keys.job_files(job_id))
    assert (await api.get(f"/v1/jobs/{job_id}/outputs/0/files/blurred.jpg")).status_code == 404


async def test_bad_files_fail_their_items_on_real_redis_too(
    tmp_path: Path, redis_url: str, redis_client: redis.Redis
) -> None:
    pipelines_file = write_pipelines(tmp_path, PIPELINES)
    settings = Settings(redis_url=redis_url, pipelines_file=pipelines_file, read_block_ms=1)
    store = Store(redis_client, load_pipelines(settings.pipelines_file), 600, max_file_bytes=CAP)
    cpu = PreprocessWorker(store, settings, "cpu-give")
    cpu.setup()
    async with running(create_app(settings)) as api:
        inputs = [{"text": t} for t in ("big", "ghost", "two")]
        job_id = await submit(api, "give", json={"inputs": inputs})
        while cpu.run_once(block_ms=1):
            pass
        big, ghost, two = (await api.get(f"/v1/jobs/{job_id}")).json()["outputs"]
        assert big["status"] == ghost["status"] == "failed" and two["status"] == "succeeded"
        assert f"is {CAP + 1} bytes, over the {CAP}-byte cap" in big["error"]
        assert "names the file 'ghost.jpg' but did not write it" in ghost["error"]
        text, binary = two["result"]["files"]
        assert (await api.get(text["url"])).content == b"hello\n"
        assert (await api.get(binary["url"])).content == b"\x00\n\x01"  # bytes as given, newlines and all
    assert int(redis_client.hget(keys.BYTES, "held") or 0) == 0
