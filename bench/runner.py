"""One pipeline of the pipelines file, run in this process: the same stage functions and models
as dlpipe's workers, without Redis. The baseline and the peers' servers serve it; the `stages`
measurement times each stage with it.

`prepare(input)` runs the item's leading CPU stages (up to the first model stage); `finish(items)`
runs the rest over several items at once, each model stage as one batch (collate -> predict ->
split, as dlpipe's model worker does), so a server with batching hands it a batch and one without
hands it one item. Per stage it keeps the CPU-seconds (this process, all threads) and wall
seconds; per model, batches, items and forward milliseconds, which it can write to a JSON file
(at most every STATS_WRITE_INTERVAL_S) for the bench to read from outside the server.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.callables import resolve
from shared.errors import ItemError
from shared.pipeline_spec import INPUT, PipelineSpec, StageSpec, load_pipelines
from shared.settings import DEFAULT_PIPELINES_FILE

log = logging.getLogger(__name__)

STATS_WRITE_INTERVAL_S = 0.25


@dataclass
class Item:
    """One input on its way through the stages: every output so far, or why it failed."""

    values: dict[str, Any]
    error: str | None = None


@dataclass
class StageCost:
    items: int = 0
    cpu_s: float = 0.0
    wall_s: float = 0.0


@dataclass
class Counters:
    """Per model: forward passes, items in them, milliseconds in collate + predict + split."""

    models: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(dict))

    def add(self, model: str, items: int, forward_ms: float) -> None:
        c = self.models[model]
        c["batches"] = c.get("batches", 0) + 1
        c["items"] = c.get("items", 0) + items
        c["forward_ms"] = c.get("forward_ms", 0.0) + forward_ms


def stage_order(spec: PipelineSpec) -> list[StageSpec]:
    """The stages in an order where each comes after everything it needs."""
    done: set[str] = {INPUT}
    ordered: list[StageSpec] = []
    pending = list(spec.stages)
    while pending:
        ready = [s for s in pending if set(s.needs) <= done]
        if not ready:
            raise ValueError(f"pipeline {spec.name!r}: stages {[s.name for s in pending]} can never run")
        for stage in ready:
            ordered.append(stage)
            done.add(stage.name)
            pending.remove(stage)
    return ordered


class PipelineRunner:
    def __init__(
        self,
        pipeline: str,
        *,
        pipelines_file: Path | None = None,
        torch_threads: int | None = None,
        stats_file: Path | None = None,
    ) -> None:
        self.config = load_pipelines(pipelines_file or DEFAULT_PIPELINES_FILE)
        if pipeline not in self.config.pipelines:
            raise KeyError(f"no pipeline {pipeline!r} (known: {', '.join(sorted(self.config.pipelines))})")
        self.spec = self.config.pipelines[pipeline]
        self.order = stage_order(self.spec)
        first_model = next((i for i, s in enumerate(self.order) if s.model), len(self.order))
        self.leading, self.rest = self.order[:first_model], self.order[first_model:]
        self.torch_threads = torch_threads
        self.stats_file = stats_file
        self.functions: dict[str, Any] = {}
        self.models: dict[str, Any] = {}
        self.costs: dict[str, StageCost] = defaultdict(StageCost)
        self.counters = Counters()
        self._last_write = 0.0

    def load(self) -> PipelineRunner:
        import torch  # noqa: PLC0415

        if self.torch_threads:
            torch.set_num_threads(self.torch_threads)
        for stage in self.order:
            if stage.fn:
                self.functions[stage.fn] = resolve(stage.fn)
            elif stage.model and stage.model not in self.models:
                mspec = self.config.models[stage.model]
                model = resolve(mspec.class_path)(**mspec.params)
                model.load(torch.device("cpu"))
                self.models[stage.model] = model
        log.info(
            "pipeline %s loaded: models %s, torch threads %d",
            self.spec.name,
            list(self.models),
            torch.get_num_threads(),
        )
        return self

    def batch_size(self, model: str) -> int:
        """The model's max_batch_size in the pipelines file (what dlpipe's model worker fills)."""
        batching = self.config.models[model].batching_for("cpu")  # the runner loads its models on the CPU
        return batching.max_batch_size if batching else 1

    # -- running ------------------------------------------------------------------------

    def prepare(self, inp: Any) -> Item:
        item = Item(values={INPUT: inp})
        for stage in self.leading:
            self._cpu_stage(stage, [item])
        return item

    def finish(self, items: list[Item]) -> list[Item]:
        for stage in self.rest:
            if stage.model:
                self._model_stage(stage, items)
            else:
                self._cpu_stage(stage, items)
        self._maybe_write_stats()
        return items

    def run(self, inputs: list[Any]) -> list[Item]:
        """Every stage, in turn, for these inputs (model stages batched across them)."""
        return self.finish([self.prepare(inp) for inp in inputs])

    def result(self, item: Item) -> Any:
        """The final stage's output (the item's JSON result); ItemError if the item failed."""
        if item.error is not None:
            raise ItemError(item.error)
        return item.values[self.spec.sink.name]

    def _cpu_stage(self, stage: StageSpec, items: list[Item]) -> None:
        fn = self.functions[stage.fn or ""]
        for item in items:
            if item.error is not None:
                continue
            cpu, wall = time.process_time(), time.perf_counter()
            try:
                item.values[stage.name] = fn(*(item.values[n] for n in stage.needs), **stage.params)
            except ItemError as exc:
                item.error = str(exc) or type(exc).__name__
            except Exception as exc:  # noqa: BLE001 - a stage that raises fails this item, as in dlpipe
                item.error = f"{stage.name}: {type(exc).__name__}: {exc}"
            self._charge(stage.name, 1, cpu, wall)

    def _model_stage(self, stage: StageSpec, items: list[Item]) -> None:
        import torch  # noqa: PLC0415

        alive = [item for item in items if item.error is None]
        if not alive:
            return
        model = self.models[stage.model or ""]
        values = [
            item.values[stage.needs[0]] if len(stage.needs) == 1 else [item.values[n] for n in stage.needs]
            for item in alive
        ]
        cpu, wall = time.process_time(), time.perf_counter()
        try:
            with torch.inference_mode():
                rows = model.split(model.predict(model.collate(values)))
        except Exception as exc:  # noqa: BLE001 - the whole batch fails, as in dlpipe
            rows = None
            for item in alive:
                item.error = f"{stage.name}: {type(exc).__name__}: {exc}"
        self._charge(stage.name, len(alive), cpu, wall)
        self.counters.add(stage.model or "", len(alive), (time.perf_counter() - wall) * 1000.0)
        if rows is not None:
            for item, row in zip(alive, rows, strict=True):
                item.values[stage.name] = row

    def _charge(self, stage: str, items: int, cpu: float, wall: float) -> None:
        cost = self.costs[stage]
        cost.items += items
        cost.cpu_s += time.process_time() - cpu
        cost.wall_s += time.perf_counter() - wall

    def _maybe_write_stats(self) -> None:
        now = time.monotonic()
        if self.stats_file is None or now - self._last_write < STATS_WRITE_INTERVAL_S:
            return
        self._last_write = now
        write_json_atomic(self.stats_file, dict(self.counters.models))


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def read_counters(path: Path | None) -> dict[str, dict[str, float]]:
    """What a server's runner last wrote (empty if nothing yet)."""
    if path is None:
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def read_all_counters(folder: Path, pipeline: str) -> dict[str, dict[str, float]]:
    """The counters every process of a server wrote for `pipeline` (`<pipeline>.<pid>.json`),
    summed per model."""
    total: dict[str, dict[str, float]] = defaultdict(dict)
    for path in sorted(folder.glob(f"{pipeline}.*.json")):
        for model, counters in read_counters(path).items():
            for key, value in counters.items():
                total[model][key] = total[model].get(key, 0.0) + value
    return dict(total)
