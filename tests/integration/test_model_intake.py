"""The model worker's intake on a real redis-server: a batch's short wait (max_batch_delay_ms)
lasts about that long. Redis ends a BLOCK only at its event loop's next turn, 1/hz = 100 ms away
on a quiet server, so a 2 ms wait left to XREADGROUP BLOCK took ~100 ms; the intake polls it."""

from __future__ import annotations

import time
from pathlib import Path

import redis
import torch

from shared.pipeline_spec import load_pipelines
from shared.settings import Settings
from tests.stagefns import pipelines, queue_job
from tests.support.workers import make_settings
from workers.inference import load_models
from workers.model_worker import ModelWorker
from workers.preprocess import PreprocessWorker
from workers.store import Store


def test_a_few_ms_of_batch_delay_last_a_few_ms(
    redis_client: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    settings: Settings = make_settings(redis_url, tmp_path, pipelines(max_batch_size=8, max_batch_delay_ms=2))
    settings = settings.model_copy(update={"fuse_postprocess": True})  # `post` runs with the model
    config = load_pipelines(settings.pipelines_file)
    store = Store(redis_client, config, settings.job_ttl_s)
    cpu = PreprocessWorker(store, settings, "cpu-q")
    cpu.recover()
    gpu = ModelWorker(store, settings, "gpu-q", load_models(config, ["summer"], torch.device("cpu")))
    gpu.recover()
    took = []
    for i in range(5):  # one item at a time: each batch waits its 2 ms for a second that never comes
        queue_job(redis_client, config.pipelines["sums"], f"q{i}", [{"v": i}])
        assert cpu.run_once(block_ms=1000) == 1
        started = time.monotonic()
        handled, prepared = gpu.take_batch(block_ms=1000)
        took.append(time.monotonic() - started)
        assert handled == 1 and prepared is not None
        gpu.record(gpu.compute(prepared))
    assert sum(took) < 0.25, took  # left to BLOCK 2: about 0.1 s each
