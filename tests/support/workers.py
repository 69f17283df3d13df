"""The worker loops on a real redis-server, in this process: settings for the test pipelines
(tests/stagefns.py), the loops in threads, and what the tests poll for."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
import torch
import yaml

from shared import keys
from shared.pipeline_spec import load_pipelines
from shared.settings import Settings
from tests.support.webhooks import SECRET as WEBHOOK_SECRET
from workers.inference import load_models
from workers.model_worker import ModelWorker
from workers.preprocess import PreprocessWorker
from workers.store import Store


def make_settings(redis_url: str, tmp_path: Path, doc: dict[str, Any]) -> Settings:
    """Settings for the pipelines `doc` (written to tmp_path/pipelines.yaml) on `redis_url`."""
    path = tmp_path / "pipelines.yaml"
    path.write_text(yaml.safe_dump(doc))
    return Settings(
        redis_url=redis_url,
        pipelines_file=path,
        read_block_ms=100,
        heartbeat_interval_ms=200,
        torch_threads=1,
        device="cpu",
        webhook_timeout_s=5,
        webhook_secret=WEBHOOK_SECRET,
        webhook_allow_private=True,  # the receivers listen on 127.0.0.1
        webhook_retry_schedule_s="0,1,1",
        log_level="INFO",
        # These tests follow each item through every stage's stream, `post` included: the model
        # worker leaves it to the preprocess workers (the fused path: tests/*/test_fusion.py).
        fuse_postprocess=False,
    )


def pending(client: redis.Redis, stream_name: str, group: str) -> int:
    try:
        return client.xpending(keys.stream(stream_name), group)["pending"]
    except redis.ResponseError:  # no group yet
        return 0


def is_final(client: redis.Redis, job_id: str) -> bool:
    return bool(client.hget(keys.job(job_id), "status") in (b"succeeded", b"failed", b"canceled"))


@contextmanager
def running(*workers: Any) -> Iterator[threading.Event]:
    """Run the workers' real loops in threads; stop and join them on exit."""
    stop = threading.Event()
    threads = [threading.Thread(target=w.run, args=(stop,), daemon=True) for w in workers]
    for thread in threads:
        thread.start()
    try:
        yield stop
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
        assert not any(t.is_alive() for t in threads), "a worker loop did not stop"


def thread_workers(client: redis.Redis, settings: Settings) -> tuple[Store, PreprocessWorker, ModelWorker]:
    """A store, a preprocess worker and a model worker (the `summer` model) for `settings`."""
    config = load_pipelines(settings.pipelines_file)
    store = Store(client, config, settings.job_ttl_s)
    models = load_models(config, ["summer"], torch.device("cpu"))
    return store, PreprocessWorker(store, settings, "cpu-t"), ModelWorker(store, settings, "model-t", models)
