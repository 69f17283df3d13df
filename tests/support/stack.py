"""The `sums` pipeline (tests/stagefns.py) on a real redis-server with its workers stepped by hand:
a preprocess and a model worker driven by run_once, every stage call counted. (The `stack`
fixture is in tests/integration/conftest.py.)"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
import torch
import yaml

from shared import keys
from shared.job_record import JobRecord
from shared.jobs import queue_new_job
from shared.messages import now_ms
from shared.pipeline_spec import load_pipelines
from shared.settings import Settings
from tests.stagefns import pipelines
from workers import runtime
from workers.inference import load_models
from workers.model_worker import ModelWorker
from workers.preprocess import PreprocessWorker
from workers.store import Store


class Stack:
    """The `sums` pipeline (prep -> model `summer` -> post), a preprocess and a model worker
    driven by run_once, counting every stage call, and the API on the same Redis."""

    def __init__(self, redis_url: str, tmp_path: Path) -> None:
        path = tmp_path / "sums.yaml"
        path.write_text(yaml.safe_dump(pipelines()))
        # `post` is a stage of the preprocess worker's here (counted, stepped): not fused.
        self.settings = Settings(
            redis_url=redis_url, pipelines_file=path, read_block_ms=1, job_ttl_s=600, fuse_postprocess=False
        )
        self.client = redis.Redis.from_url(redis_url)
        self.store = Store(self.client, load_pipelines(path), ttl_s=600)
        self.calls: Counter[str] = Counter()
        functions = {
            name: self._counted(name.split(":")[1], fn)
            for name, fn in runtime.resolve_stage_functions(self.store.config).items()
        }
        self.cpu = PreprocessWorker(self.store, self.settings, "cpu-1", functions=functions)
        models = load_models(self.store.config, ["summer"], torch.device("cpu"))
        predict = models["summer"].predict

        def counted_predict(batch: torch.Tensor) -> torch.Tensor:
            self.calls["infer"] += int(batch.shape[0])
            return predict(batch)

        models["summer"].predict = counted_predict  # type: ignore[method-assign]
        self.model = ModelWorker(self.store, self.settings, "gpu-1", models)
        self.cpu.recover()
        self.model.recover()

    def _counted(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return fn(*args, **kwargs)

        return run

    def queue(self, job_id: str, n: int, timeout_s: float | None = None) -> None:
        pipe = self.client.pipeline()
        queue_new_job(
            pipe,
            JobRecord.new(
                id=job_id,
                pipeline=self.store.config.pipelines["sums"].name,
                total=n,
                created_ms=now_ms(),
                timeout_s=timeout_s,
            ),
            pipeline=self.store.config.pipelines["sums"],
            inputs=[{"v": i} for i in range(n)],
            ttl_s=600,
        )
        pipe.execute()

    def half_way(self) -> None:
        """8 items through all stages, 8 more through prep only; the rest not started."""
        assert self.cpu.run_once(1) == 8  # prep 0-7
        assert self.model.run_once(1) == 8  # infer 0-7
        assert self.cpu.run_once(1) == 16  # post 0-7, prep 8-15

    def drain(self) -> None:
        while self.cpu.run_once(1) + self.model.run_once(1):
            pass

    def nothing_pending(self) -> bool:
        streams = [(keys.CPU_GROUP, s) for s in self.store.config.cpu_streams()]
        streams += [(keys.MODEL_GROUP, s) for s in self.store.config.model_streams().values()]
        for group, name in streams:
            if not self.client.exists(keys.stream(name)):
                continue
            info = {g["name"].decode(): g for g in self.client.xinfo_groups(keys.stream(name))}
            if info[group]["pending"] or info[group].get("lag"):
                return False
        return True

    def completed_events(self, job_id: str) -> int:
        return sum(
            1
            for _, f in self.client.xrange(keys.EVENTS)
            if f[b"job"] == job_id.encode() and f[b"type"] == b"job.completed"
        )
