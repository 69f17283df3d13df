"""`dlpipe worker model`: batched inference for every model some pipeline uses.

One process owns the device. A step has three parts:

- `take_batch()`: choose the model and fill its batch (workers/model_queues.py: by the
  scheduling policy of workers/scheduling.py, DLPIPE_MODEL_SCHEDULER), load its values, fail
  alone the items that cannot join it (undecodable, wrong shape), and collate the rest into one
  CPU batch (pinned on CUDA); the batch is then committed to the device clock, which predicts
  when the device will be free from each model's measured cost curve;
- `compute()`: device copy -> predict -> split (an exception fails every item of the batch);
  its time goes into the model's cost curve;
- `record()`: run the fused postprocess stages on the rows (workers/fusion.py), write every
  result, acknowledge the entries, add the model's counters, in one round trip.

`run_once()` runs the three in turn (tests drive it). The process runs them overlapped
(workers/model_loop.py): while the device runs one batch, a thread fills and collates the
next (deciding it only when the device is about to be free, so it is as full as it can be)
and another records the last, so the model never waits for Redis or decoding
(DLPIPE_MODEL_OVERLAP=false runs plain steps). The compute itself (device, loading models,
shape checks, the forward pass) is in workers/inference.py.

Each batch's counters go to the model's stats hash in Redis (keys.model_stats: batches,
items, forward_ms, failed_batches) in the same round trip as its results, so other
processes (benchmarks, metrics) can read them; this process also logs them every ~30 s.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable

import torch

from shared import keys
from shared.codecs import CodecError
from shared.settings import Settings
from workers import runtime
from workers.fusion import Fusion
from workers.inference import (
    ModelStats,
    Prepared,
    Ready,
    Shape,
    StatsLog,
    check_shapes,
    collate,
    forward,
    model_batching,
)
from workers.model_loop import Computed, run_overlapped
from workers.model_queues import ModelQueues
from workers.models.base import Model
from workers.scheduling import CostCurve, DeviceClock, Scheduler
from workers.stage_worker import StageWorker
from workers.store import Entry, StageResult, Store

log = logging.getLogger("workers.model_worker")  # not __main__ under `python -m`

PREPARE_EMA = 0.2  # weight of the last batch in the mean time a batch takes to prepare


class ModelWorker(StageWorker):
    kind = "model"
    group = keys.MODEL_GROUP

    def __init__(
        self,
        store: Store,
        settings: Settings,
        consumer: str,
        models: dict[str, Model],
        device: torch.device | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.models = models
        self.device = device or torch.device("cpu")
        self.clock = clock
        self.streams = store.config.model_streams(list(models))  # model -> stream name
        self.store = store
        super().__init__(
            store.redis,
            settings,
            consumer,
            # Every model's streams, one per priority (keys.stage_streams): read, reclaimed, trimmed.
            [s for stream in self.streams.values() for s in keys.stage_streams(stream)],
            clock,
        )
        self.batching = model_batching(store.config, list(self.streams), self.device)
        self.curves = {name: CostCurve() for name in self.streams}  # forward ms = a + b * n
        self.device_clock = DeviceClock(self.curves, clock)
        scheduler = None
        if settings.model_scheduler == "efficiency":
            # Batches fill while the device is busy where this process owns it (a GPU: one model
            # worker); CPU replicas share the streams item by item and take what is there.
            scheduler = Scheduler(
                self.curves,
                settings.scheduler_max_age_ms / 1000.0,
                fill_while_busy=settings.model_replicas == 1,
            )
        self.queues = ModelQueues(
            store, consumer, self.streams, self.batching, self.reclaimer, self.device_clock, scheduler, clock
        )
        self.fusion = Fusion(store.config, list(self.streams), settings.fuse_postprocess)
        runtime.configure_stage_modules(self.fusion.functions, settings)
        self._prepare_s = 0.0  # mean time from choosing a batch to having it ready
        self._shape: dict[str, Shape] = {}  # model -> the last (shape, dtype) that ran
        self.stats: dict[str, ModelStats] = defaultdict(ModelStats)
        self.stats_log = StatsLog(clock)

    # -- the step ---------------------------------------------------------------------

    def run_once(self, block_ms: int | None = None) -> int:
        """Take a batch, compute it, record it. Returns the entries handled."""
        handled, prepared = self.take_batch(block_ms)
        if prepared is not None:
            self.record(self.compute(prepared))
        self.log_stats()
        return handled

    def take_batch(self, block_ms: int | None = None) -> tuple[int, Prepared | None]:
        """Take back a suspect entry (if due), pick a model, fill its batch and make it ready for
        the forward pass (committed to the device clock). Returns the entries handled (given up
        ones too) and the batch."""
        given_up = self.queues.take_suspect()
        block = self.settings.read_block_ms if block_ms is None else block_ms
        planned = not self.device_clock.idle()  # chosen to follow a running batch
        batch = self.queues.next_batch(block, self._prepare_s + self.device_clock.margin_s)
        if batch is None:
            return given_up, None
        started = self.clock()
        prepared = self.prepare(*batch)
        self._prepare_s += PREPARE_EMA * (self.clock() - started - self._prepare_s)
        if prepared.ready:
            self.device_clock.commit(prepared.name, len(prepared.ready), planned)
        return given_up + len(batch[1]), prepared

    def prepare(self, name: str, entries: list[Entry]) -> Prepared:
        """Load the batch's values; fail alone what cannot join it; collate the rest."""
        prepared = Prepared(name, entries)
        prepared.metrics.waited(entries)
        ready: Ready = []
        for entry, values in zip(entries, self.store.load(entries), strict=True):
            if values is None:
                prepared.gone.append(entry)
                continue
            bad = next((v for v in values if isinstance(v, CodecError)), None)
            if bad is not None:
                error = f"{entry.item.stage}: input cannot be decoded: {bad}"
                prepared.failed.append(StageResult(entry, error=error))
            else:
                ready.append((entry, values[0] if len(values) == 1 else values))
        ready, rejected = self._check_shapes(name, ready)
        prepared.failed += rejected
        if ready:
            prepared.batch, failed = collate(name, self.models[name], ready, self.device)
            if failed:
                prepared.failed += failed
            else:
                prepared.ready = [entry for entry, _ in ready]
        return prepared

    def compute(self, prepared: Prepared) -> Computed:
        """The forward pass over the batch, if anything is left to run."""
        name = prepared.name
        self.stats[name].items += len(prepared.entries)
        if not prepared.ready:
            return Computed(prepared, None)
        self.device_clock.begin(name, len(prepared.ready))
        run = forward(name, self.models[name], prepared.ready, prepared.batch, self.device, self.clock)
        self.device_clock.end(None if run.failed else run.seconds)  # a failed pass teaches no cost
        self.stats[name].add(run)
        prepared.metrics.forward(name, run.results, run.seconds)
        return Computed(prepared, run)

    def record(self, computed: Computed) -> None:
        """Every result (and the model's counters, if the forward pass ran) in one round trip."""
        prepared, run = computed.prepared, computed.run
        rows = self.fusion.apply(run.results, prepared.metrics) if run is not None else []
        results = prepared.failed + rows
        counters = {keys.model_stats(prepared.name): run.counters()} if run is not None else {}
        if prepared.gone:
            self.store.ack_gone(keys.MODEL_GROUP, prepared.gone)
        if results:
            self.store.complete(keys.MODEL_GROUP, results, {**counters, **prepared.metrics.take()})

    # -- computing --------------------------------------------------------------------

    def _check_shapes(self, name: str, ready: Ready) -> tuple[Ready, list[StageResult]]:
        """Fail alone the items that cannot be stacked with the rest (inference.check_shapes)."""
        ready, rejected, shape = check_shapes(name, self.models[name], ready, self._shape.get(name))
        if shape is not None:
            self._shape[name] = shape
        return ready, rejected

    # -- lifecycle --------------------------------------------------------------------

    def setup(self) -> None:
        self.store.ensure_groups(self.all_streams, self.group)

    def recover(self) -> None:
        """Make the groups; queue every entry this consumer read but did not finish to be taken
        back, one per step (each a delivery more: one that keeps failing is given up)."""
        self.queues.clear()
        self.device_clock.reset()
        super().recover()

    def finish(self) -> None:
        """Warm shutdown: run the entries already read, so none stay pending for this consumer."""
        for name, held in self.queues.held.items():
            size = self.batching[name].max_batch_size
            while held:
                entries = held[:size]
                del held[:size]
                self.record(self.compute(self.prepare(name, entries)))

    def log_stats(self, force: bool = False) -> None:
        """Every ~30 s, one line per model that ran: batches, mean batch size, duty cycle."""
        self.stats_log.maybe_log(self.stats, force)

    def serving(self) -> str:
        return f"models {', '.join(self.streams)} on {self.device}"

    def loop(self, stop: threading.Event) -> None:
        if self.settings.model_overlap:
            run_overlapped(self, stop)
        else:
            super().loop(stop)

    def stopped(self) -> None:
        self.log_stats(force=True)
