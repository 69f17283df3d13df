"""A folder of ~200 generated images as one job, on a real redis-server: the API expands it
into one item per file, the real preprocess and model workers' steps run every item on its
own (a broken file fails alone), and every output names its file."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis
import torch
import yaml
from PIL import Image

from services.api.app import create_app
from shared.messages import JobStatus
from shared.pipeline_spec import load_pipelines
from shared.settings import Settings
from tests.stagefns import job_view
from tests.support.api import running
from workers.inference import load_models
from workers.model_worker import ModelWorker
from workers.preprocess import PreprocessWorker
from workers.store import Store
from workers.transforms import image
from workers.transforms.image import decode_resize_crop

pytestmark = pytest.mark.anyio

COUNT = 200


def mean_colour(inp: dict[str, Any]) -> np.ndarray:
    """The stage under test: the real decode (which reads the `path`), then the mean RGB."""
    return decode_resize_crop(inp, resize=8, crop=8).reshape(-1, 3).mean(axis=0).astype(np.float32)


PIPELINES = {
    "models": {
        "summer": {
            "class": "tests.stagefns:SumModel",
            "batching": {"max_batch_size": 16, "max_batch_delay_ms": 1},
        }
    },
    "pipelines": {
        "colours": {
            "input": "image",
            "stages": [
                {"name": "decode", "kind": "preprocess", "fn": f"{__name__}:mean_colour"},
                {"name": "infer", "kind": "model", "model": "summer"},
                {"name": "post", "kind": "postprocess", "fn": "tests.stagefns:to_result"},
            ],
        }
    },
}


def png(colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 16), colour).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """<root>/batch: img_000.png .. img_199.png (image i is solid (i, 1, 0): its colour sum is i + 1),
    zz_broken.png (not an image) and notes.txt (not listed)."""
    folder = tmp_path / "data" / "batch"
    folder.mkdir(parents=True)
    for i in range(COUNT):
        (folder / f"img_{i:03d}.png").write_bytes(png((i, 1, 0)))
    (folder / "zz_broken.png").write_bytes(b"\x89PNG this is not one")
    (folder / "notes.txt").write_text("not an image")
    return tmp_path / "data"


@pytest.fixture
def settings(tmp_path: Path, redis_url: str, root: Path) -> Iterator[Settings]:
    path = tmp_path / "pipelines.yaml"
    path.write_text(yaml.safe_dump(PIPELINES))
    settings = Settings(
        redis_url=redis_url, pipelines_file=path, data_root=root, max_inputs_per_job=COUNT + 1, job_ttl_s=600
    )
    image.configure(settings)  # what a preprocess process reads from its DLPIPE_* environment
    yield settings
    image.configure(None)


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with running(create_app(settings)) as client:
        yield client


async def test_a_folder_of_two_hundred_images_runs_item_by_item(
    api: httpx.AsyncClient, settings: Settings, redis_client: redis.Redis
) -> None:
    response = await api.post("/v1/pipelines/colours/jobs", json={"inputs": [{"path": "batch"}]})
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    assert response.json()["progress"]["total"] == COUNT + 1

    config = load_pipelines(settings.pipelines_file)
    store = Store(redis_client, config, settings.job_ttl_s)
    cpu = PreprocessWorker(store, settings, "cpu-folder")
    model = ModelWorker(store, settings, "model-folder", load_models(config, None, torch.device("cpu")))
    cpu.setup()
    model.setup()
    steps = 0
    while job_view(redis_client, job_id).status not in (JobStatus.succeeded, JobStatus.failed):
        cpu.run_once(block_ms=1)
        model.run_once(block_ms=1)
        steps += 1
        assert steps < 2000, "the job stopped moving"

    view = job_view(redis_client, job_id)
    assert view.status == JobStatus.succeeded and view.progress.done == COUNT + 1
    outputs = view.outputs
    names = [f"batch/img_{i:03d}.png" for i in range(COUNT)] + ["batch/zz_broken.png"]
    assert [o.source for o in outputs] == names
    assert [o.result["sum"] for o in outputs[:COUNT]] == pytest.approx([i + 1.0 for i in range(COUNT)])
    assert all(o.status.value == "succeeded" for o in outputs[:COUNT])
    broken = outputs[COUNT]
    assert broken.status.value == "failed" and "not a decodable image" in (broken.error or "")
    assert max(o.result["batch"] for o in outputs[:COUNT]) > 1  # items from one folder batch like any others
