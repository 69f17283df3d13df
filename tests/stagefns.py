"""Tiny stage functions and models for the worker tests: no images, no weights.

Inputs are dicts like {"v": 3}. `to_vector` turns one into a float32 vector; the sum
models return per item [sum * scale, batch size], so a result shows the batch it ran in.

The model classes are built on first access (module __getattr__): importing this module,
as a preprocess worker does to resolve its stage functions, must not import torch.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from shared import keys
from shared.errors import ItemError
from shared.job_record import JobRecord, job_view_from_redis
from shared.jobs import queue_new_job
from shared.messages import JobView, now_ms
from shared.pipeline_spec import PipelineSpec
from shared.priority import Priority

MODEL_CLASSES = ("SumModel", "ExplodingModel", "SlowSumModel", "GatedSumModel")


def to_vector(value: dict[str, Any], *, size: int = 2) -> np.ndarray:
    """{"v": x} -> [x] * size. "bad" fails the item (ItemError), "crash" raises a plain error,
    "n" overrides the length (a wrong shape for the model)."""
    if "bad" in value:
        raise ItemError(f"bad input: {value['bad']}")
    if "crash" in value:
        raise ValueError("crash requested")
    return np.full((int(value.get("n", size)),), float(value["v"]), dtype=np.float32)


def slow_vector(value: dict[str, Any], *, size: int = 2, seconds: float = 0.2) -> np.ndarray:
    """to_vector, taking `seconds` of work per item (warm-shutdown tests need work in hand)."""
    time.sleep(seconds)
    return to_vector(value, size=size)


def wait_for_gate(gate: str, timeout_s: float = 120.0) -> None:
    """Block (in the worker) until the file `gate` exists: work held in hand, unacknowledged."""
    deadline = time.monotonic() + timeout_s
    while not Path(gate).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate {gate} never opened")
        time.sleep(0.01)


def gated_vector(value: dict[str, Any], *, gate: str, size: int = 2) -> np.ndarray:
    """to_vector once the file `gate` exists."""
    wait_for_gate(gate)
    return to_vector(value, size=size)


def vector_or_die(value: dict[str, Any], *, log: str, size: int = 2) -> np.ndarray:
    """to_vector, first noting {"v"} in the file `log`; an input with "die" kills the process."""
    with open(log, "a") as notes:
        notes.write(f"{value['v']}\n")
    if value.get("die"):
        os._exit(13)  # as an OOM kill or a segfault would: no cleanup, nothing acknowledged
    return to_vector(value, size=size)


def to_result(row: np.ndarray) -> dict[str, Any]:
    return {"sum": float(row[0]), "batch": int(row[1])}


def picky_result(row: np.ndarray) -> dict[str, Any]:
    """to_result, but a sum of 6 fails the item (ItemError) and a sum of 8 raises a plain error."""
    if float(row[0]) == 6.0:
        raise ItemError("six is not allowed")
    if float(row[0]) == 8.0:
        raise ValueError("eight crashes")
    return to_result(row)


def echo(value: Any) -> Any:
    return value


def _build_models() -> dict[str, type]:
    import torch

    from workers.models.base import Model

    class SumModel(Model):
        """Per item: [sum of its vector * scale, size of the batch it ran in]."""

        def load(self, device: torch.device) -> None:
            self.device = device
            self.scale = torch.tensor(float(self.params.get("scale", 1.0)), device=device)

        def predict(self, batch: torch.Tensor) -> torch.Tensor:
            assert batch.device.type == self.device.type, "the worker moves batches to the device"
            sums = batch.float().sum(dim=1) * self.scale
            return torch.stack([sums, torch.full_like(sums, batch.shape[0])], dim=1)

    class ExplodingModel(SumModel):
        def predict(self, batch: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("model exploded")

    class SlowSumModel(SumModel):
        def predict(self, batch: torch.Tensor) -> torch.Tensor:
            time.sleep(float(self.params.get("seconds", 0.2)))
            return super().predict(batch)

    class GatedSumModel(SumModel):
        def predict(self, batch: torch.Tensor) -> torch.Tensor:
            wait_for_gate(str(self.params["gate"]))
            return super().predict(batch)

    classes: dict[str, type] = {
        "SumModel": SumModel,
        "ExplodingModel": ExplodingModel,
        "SlowSumModel": SlowSumModel,
        "GatedSumModel": GatedSumModel,
    }
    for name, cls in classes.items():
        cls.__qualname__ = name
        cls.__module__ = __name__
    return classes


# -- helpers the worker tests share ----------------------------------------------------


def pipelines(
    model_class: str = "SumModel",
    *,
    prep: str = "to_vector",
    prep_params: dict[str, Any] | None = None,
    model_params: dict[str, Any] | None = None,
    max_batch_size: int = 8,
    max_batch_delay_ms: float = 5,
) -> dict[str, Any]:
    """A pipelines document: `sums` = prep -> model `summer` -> post, plus `boom`, whose
    model always raises, and `tens`, on a second model (`tenfold`, scale 10)."""

    def pipeline(model: str) -> dict[str, Any]:
        return {
            "input": "image",
            "stages": [
                {
                    "name": "prep",
                    "kind": "preprocess",
                    "fn": f"tests.stagefns:{prep}",
                    "params": prep_params or {},
                },
                {"name": "infer", "kind": "model", "model": model},
                {"name": "post", "kind": "postprocess", "fn": "tests.stagefns:to_result"},
            ],
        }

    batching = {"max_batch_size": max_batch_size, "max_batch_delay_ms": max_batch_delay_ms}
    return {
        "models": {
            "summer": {
                "class": f"tests.stagefns:{model_class}",
                "params": model_params or {},
                "batching": batching,
            },
            "exploder": {"class": "tests.stagefns:ExplodingModel", "batching": batching},
            "tenfold": {"class": "tests.stagefns:SumModel", "params": {"scale": 10}, "batching": batching},
        },
        "pipelines": {"sums": pipeline("summer"), "boom": pipeline("exploder"), "tens": pipeline("tenfold")},
    }


def queue_job(
    client: Any,
    pipeline: PipelineSpec,
    job_id: str,
    inputs: list[Any],
    webhook: str | None = None,
    webhook_events: list[str] | None = None,
    priority: Priority = Priority.normal,
) -> None:
    pipe = client.pipeline()
    queue_new_job(
        pipe,
        JobRecord.new(
            id=job_id,
            pipeline=pipeline.name,
            total=len(inputs),
            webhook=webhook,
            webhook_events=webhook_events,
            created_ms=now_ms(),
            priority=priority,
        ),
        pipeline=pipeline,
        inputs=inputs,
        ttl_s=3600,
    )
    pipe.execute()


def job_view(client: Any, job_id: str) -> JobView:
    return job_view_from_redis(client.hgetall(keys.job(job_id)), client.hgetall(keys.job_outputs(job_id)))


def __getattr__(name: str) -> Any:
    if name in MODEL_CLASSES:
        globals().update(_build_models())
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
