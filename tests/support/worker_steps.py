"""The worker classes on fakeredis (or any client), stepped by hand: each test calls run_once()
(fakeredis never blocks). The pipelines are tests/stagefns.py's."""

from __future__ import annotations

from typing import Any

import torch

from shared.pipeline_spec import parse_pipelines
from shared.settings import Settings
from tests.stagefns import pipelines
from workers.inference import load_models
from workers.model_worker import ModelWorker
from workers.preprocess import PreprocessWorker
from workers.store import Store

SETTINGS = Settings(redis_url="redis://unused", read_block_ms=1)


def make_store(client: Any, **options: Any) -> Store:
    return Store(client, parse_pipelines(pipelines(**options)), ttl_s=3600)


def cpu_worker(store: Store) -> PreprocessWorker:
    worker = PreprocessWorker(store, SETTINGS, "cpu-1")
    worker.recover()
    return worker


def model_worker(store: Store, names: list[str] | None, settings: Settings = SETTINGS) -> ModelWorker:
    worker = ModelWorker(store, settings, "gpu-1", load_models(store.config, names, torch.device("cpu")))
    worker.recover()
    return worker


def drain(*workers: Any) -> None:
    """Step every worker until none has anything left."""
    while sum(worker.run_once() for worker in workers):
        pass
