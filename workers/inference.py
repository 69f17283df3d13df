"""The model worker's compute: the device, loading the models, and one batch's forward pass.

No Redis and no stream bookkeeping here: ModelWorker (workers/model_worker.py) chooses what
to batch and records what comes out. `check_shapes` keeps items that cannot be stacked out
of a batch (they fail alone); `collate` makes the rest one batch (a `Prepared` one, made off
the model's thread while the previous batch runs); `forward` runs device copy -> predict ->
split. An exception in collate or forward fails every item of the batch with the reason.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from shared.callables import resolve
from shared.pipeline_spec import Batching, PipelineConfigError, PipelinesConfig
from shared.settings import Settings
from workers.metrics import StageMetrics
from workers.models.base import Model
from workers.store import Entry, StageResult

log = logging.getLogger(__name__)

Shape = tuple[tuple[int, ...], str]  # an input array's shape and dtype
Ready = list[tuple[Entry, Any]]  # entries that can join a batch, each with its decoded input


@dataclass(frozen=True)
class ForwardPass:
    """What one forward pass made of a batch: a result per item, and what it cost."""

    results: list[StageResult]
    seconds: float  # device copy + predict + split
    failed: bool  # it raised: every result is that error

    def counters(self) -> dict[str, int | float]:
        """Its increments of the model's stats hash in Redis (keys.model_stats), which
        bench/scripts/e2e_throughput.py reads across processes."""
        return {
            "batches": 1,
            "items": len(self.results),  # the forward batch size
            "forward_ms": self.seconds * 1000.0,
            "failed_batches": int(self.failed),
        }


@dataclass
class ModelStats:
    """One model's counters in this process, for the periodic stats log line."""

    batches: int = 0  # forward passes run (failed ones included)
    failed_batches: int = 0
    items: int = 0  # entries handled, including items failed before the forward pass
    batched_items: int = 0  # sum of forward batch sizes
    busy_s: float = 0.0  # time in device copy + predict + split

    @property
    def mean_batch(self) -> float:
        return self.batched_items / self.batches if self.batches else 0.0

    def add(self, run: ForwardPass) -> None:
        self.batches += 1
        self.failed_batches += int(run.failed)
        self.batched_items += len(run.results)
        self.busy_s += run.seconds

    def minus(self, other: ModelStats) -> ModelStats:
        return ModelStats(*(getattr(self, f) - getattr(other, f) for f in self.__dataclass_fields__))


STATS_LOG_INTERVAL_S = 30.0


class StatsLog:
    """The model worker's periodic log line per model, over the window since the last one."""

    def __init__(self, clock: Callable[[], float], interval_s: float = STATS_LOG_INTERVAL_S) -> None:
        self.clock = clock
        self.interval_s = interval_s
        self._logged: dict[str, ModelStats] = {}
        self._window_start = clock()
        self._next_log = self._window_start + interval_s

    def maybe_log(self, stats: dict[str, ModelStats], force: bool = False) -> None:
        now = self.clock()
        if not force and now < self._next_log:
            return
        window = max(now - self._window_start, 1e-9)
        for name, total in stats.items():
            delta = total.minus(self._logged.get(name, ModelStats()))
            if delta.batches:
                log.info(
                    "model=%s batches=%d items=%d mean_batch=%.2f failed_batches=%d duty=%.2f",
                    name,
                    delta.batches,
                    delta.items,
                    delta.mean_batch,
                    delta.failed_batches,
                    delta.busy_s / window,
                )
            self._logged[name] = ModelStats(**vars(total))
        self._window_start, self._next_log = now, now + self.interval_s


def model_batching(config: PipelinesConfig, models: list[str], device: torch.device) -> dict[str, Batching]:
    """Each model's batching on this device (the pipelines file may give one per device type)."""
    out = {}
    for name in models:
        batching = config.models[name].batching_for(device.type)
        if batching is None:  # the config loader requires it for models a pipeline uses
            raise PipelineConfigError(f"model {name!r} has no batching settings")
        out[name] = batching
    return out


def pick_device(settings: Settings) -> torch.device:
    return torch.device(settings.device or ("cuda" if torch.cuda.is_available() else "cpu"))


def load_models(config: PipelinesConfig, names: list[str] | None, device: torch.device) -> dict[str, Model]:
    """Build and load each model a pipeline uses (only `names`, if given)."""
    unknown = sorted(set(names or []) - set(config.models))
    if unknown:
        raise PipelineConfigError(
            f"unknown models: {', '.join(unknown)} (known: {', '.join(sorted(config.models))})"
        )
    models: dict[str, Model] = {}
    for name in config.model_streams(names):
        spec = config.models[name]
        started = time.monotonic()
        model = resolve(spec.class_path)(**spec.params)
        model.load(device)
        models[name] = model
        log.info("model=%s loaded on %s in %.1fs", name, device, time.monotonic() - started)
    return models


def to_device(batch: Any, device: torch.device) -> Any:
    """A tensor or a dict of tensors onto `device` (non-blocking copies on CUDA: from pinned
    memory, see `pin`, they overlap the work queued before them)."""
    if isinstance(batch, dict):
        return {key: to_device(value, device) for key, value in batch.items()}
    if not isinstance(batch, torch.Tensor) or batch.device == device:
        return batch
    if device.type == "cuda":
        if not batch.is_pinned():
            batch = batch.pin_memory()
        return batch.to(device, non_blocking=True)
    return batch.to(device)


def check_shapes(
    name: str, model: Model, ready: Ready, last: Shape | None
) -> tuple[Ready, list[StageResult], Shape | None]:
    """With the default (stacking) collate, items must be arrays of one shape and dtype.

    The batch's shape is `last` (the last one that ran) if some item has it, else the most
    common; the others fail alone. Models with their own collate (padding, dicts) check their
    own inputs. Returns the items kept, the ones failed, and the shape to remember as `last`
    (None: keep the one before).
    """
    if type(model).collate is not Model.collate or not ready:
        return ready, [], None
    kinds: list[Shape | None] = [
        (v.shape, v.dtype.str) if isinstance(v, np.ndarray) else None for _, v in ready
    ]
    counts = Counter(k for k in kinds if k is not None)
    expected = last
    if expected not in counts and counts:
        expected = counts.most_common(1)[0][0]
    keep, rejected = [], []
    for (entry, value), kind in zip(ready, kinds, strict=True):
        if kind is not None and kind == expected:
            keep.append((entry, value))
            continue
        if kind is None or expected is None:
            reason = f"{entry.item.stage}: model {name} takes arrays, got {type(value).__name__}"
        else:
            reason = (
                f"{entry.item.stage}: input of shape {kind[0]} {kind[1]} does not match "
                f"the batch's {expected[0]} {expected[1]}"
            )
        item = entry.item
        log.info("job=%s stage=%s index=%d rejected: %s", item.job_id, item.stage, item.index, reason)
        rejected.append(StageResult(entry, error=reason))
    return keep, rejected, expected if keep else None


@dataclass
class Prepared:
    """A batch made ready for the forward pass, off the model's thread: its entries' values
    loaded and decoded, the ones that cannot run failed, the rest collated into one CPU batch
    (pinned on CUDA, so its copy to the device does not block)."""

    name: str  # the model
    entries: list[Entry]  # every entry of the batch
    gone: list[Entry] = field(default_factory=list)  # nothing to run: the item is gone or stopped
    failed: list[StageResult] = field(default_factory=list)  # failed alone, before the forward pass
    ready: list[Entry] = field(default_factory=list)  # the entries in `batch`, in order
    batch: Any = None  # model.collate() of their values
    # What GET /metrics learns of this batch (queue waits, forward time, size): it travels with
    # the batch through the threads and is sent with its results (Store.complete).
    metrics: StageMetrics = field(default_factory=StageMetrics)


def collate(name: str, model: Model, ready: Ready, device: torch.device) -> tuple[Any, list[StageResult]]:
    """The batch of `ready` (not empty) for the device, or (None, every item failed with why)."""
    try:
        batch = model.collate([value for _, value in ready])
        if device.type == "cuda":
            batch = pin(batch)
        return batch, []
    except Exception as exc:
        return None, _fail_batch(name, [entry for entry, _ in ready], exc)


def pin(batch: Any) -> Any:
    """A CPU tensor (or a dict's tensors) in page-locked memory: its copy to the GPU can overlap."""
    if isinstance(batch, dict):
        return {key: pin(value) for key, value in batch.items()}
    return batch.pin_memory() if isinstance(batch, torch.Tensor) and batch.device.type == "cpu" else batch


def forward(
    name: str,
    model: Model,
    entries: list[Entry],
    batch: Any,
    device: torch.device,
    clock: Callable[[], float] = time.monotonic,
) -> ForwardPass:
    """device copy -> predict -> split of a collated batch (not empty): a result per entry."""
    started = clock()
    try:
        with torch.inference_mode():
            output = model.predict(to_device(batch, device))
            rows = model.split(output)
        if len(rows) != len(entries):
            raise RuntimeError(f"split() returned {len(rows)} rows for {len(entries)} items")
    except Exception as exc:
        return ForwardPass(_fail_batch(name, entries, exc), clock() - started, failed=True)
    seconds = clock() - started
    results = [StageResult(entry, value=row) for entry, row in zip(entries, rows, strict=True)]
    return ForwardPass(results, seconds, failed=False)


def _fail_batch(name: str, entries: list[Entry], exc: Exception) -> list[StageResult]:
    """Every item of a batch that raised fails with the reason."""
    jobs = ",".join(sorted({e.item.job_id for e in entries}))
    log.error("model=%s batch of %d failed (jobs=%s)", name, len(entries), jobs, exc_info=exc)
    reason = f"{entries[0].item.stage}: {type(exc).__name__}: {exc}"
    return [StageResult(entry, error=reason) for entry in entries]
