"""`dlpipe worker model`: batched inference for every model some pipeline uses.

One process owns the device. A step has three parts:

- `take_batch()`: pick the model whose waiting entry is oldest, fill a batch for it
  (collect_batch: up to max_batch_size, at most max_batch_delay_ms after the first entry),
  load its values, fail alone the items that cannot join it (undecodable, wrong shape), and
  collate the rest into one CPU batch (pinned on CUDA);
- `compute()`: device copy -> predict -> split (an exception fails every item of the batch);
- `record()`: write every result, acknowledge the entries, add the model's counters, in one
  round trip.

`run_once()` runs the three in turn (tests drive it). The process runs them overlapped
(workers/model_loop.py): while the device runs one batch, a thread takes and collates the
next and another records the last, so the model never waits for Redis or decoding
(DLPIPE_MODEL_OVERLAP=false runs plain steps). The compute itself (device, loading models,
shape checks, the forward pass) is in workers/inference.py.

Each batch's counters go to the model's stats hash in Redis (keys.model_stats: batches,
items, forward_ms, failed_batches) in the same round trip as its results, so other
processes (benchmarks, metrics) can read them; this process also logs them every ~30 s.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from functools import partial

import torch

from shared import keys
from shared.codecs import CodecError
from shared.settings import Settings
from workers import runtime
from workers.batching import collect_batch
from workers.heartbeat import Heartbeat
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
from workers.models.base import Model
from workers.reclaim import Reclaimer, take_work
from workers.store import Entry, StageResult, Store

log = logging.getLogger("workers.model_worker")  # not __main__ under `python -m`

def _entry_order(entry: Entry) -> tuple[int, int]:
    ms, _, seq = entry.entry_id.partition("-")
    return int(ms), int(seq or 0)


class ModelWorker:
    kind = "model"

    def __init__(
        self,
        store: Store,
        settings: Settings,
        consumer: str,
        models: dict[str, Model],
        device: torch.device | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.settings = settings
        self.consumer = consumer
        self.models = models
        self.device = device or torch.device("cpu")
        self.clock = clock
        self.streams = store.config.model_streams(list(models))  # model -> stream name
        self.batching = model_batching(store.config, list(self.streams), self.device)
        self._model_of = {keys.stream(stream): name for name, stream in self.streams.items()}
        self._held: dict[str, list[Entry]] = {name: [] for name in self.streams}  # read, not yet batched
        self._suspect: Entry | None = None  # the entry taken back that is held, if any
        self.reclaimer = Reclaimer(
            store.redis,
            keys.MODEL_GROUP,
            consumer,
            [keys.stream(s) for s in self.streams.values()],
            settings.lease_ms,
            settings.max_deliveries,
            clock,
            trim_interval_s=settings.stream_trim_interval_s,
        )
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
        the forward pass. Returns the entries handled (given up ones too) and the batch."""
        given_up = self.take_suspect()
        batch = self.next_batch(self.settings.read_block_ms if block_ms is None else block_ms)
        if batch is None:
            return given_up, None
        return given_up + len(batch[1]), self.prepare(*batch)

    def take_suspect(self) -> int:
        """Hold one entry taken back (own unfinished, or idle under a dead worker): it joins
        the next batch of its model like a new one. One at a time, so a poison entry that
        kills this process is charged the deliveries, not a batch of others with it.
        Returns the entries given up."""
        held_ids = {e.entry_id for held in self._held.values() for e in held}
        if self._suspect is not None and self._suspect.entry_id in held_ids:
            return 0
        self._suspect = None
        suspects, handled = take_work(self.reclaimer, self.store)
        for entry in suspects:
            if entry.entry_id in held_ids:  # read by this worker already, not batched yet
                continue
            self._held[self._model_of[entry.stream]].insert(0, entry)
            self._suspect = entry
        return handled - len(suspects)

    def next_batch(self, block_ms: int) -> tuple[str, list[Entry]] | None:
        """The model whose oldest waiting entry arrived first, and a batch of its entries."""
        self._peek(block_ms)
        waiting = [name for name, held in self._held.items() if held]
        if not waiting:
            return None
        name = min(waiting, key=lambda n: _entry_order(self._held[n][0]))
        batching = self.batching[name]
        entries = collect_batch(
            partial(self._read_for, name),
            self.clock,
            batching.max_batch_size,
            batching.max_batch_delay_ms,
            first_block_ms=1,
        )
        return name, entries

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
        run = forward(name, self.models[name], prepared.ready, prepared.batch, self.device, self.clock)
        self.stats[name].add(run)
        prepared.metrics.forward(name, run.results, run.seconds)
        return Computed(prepared, run)

    def record(self, computed: Computed) -> None:
        """Every result (and the model's counters, if the forward pass ran) in one round trip."""
        prepared, run = computed.prepared, computed.run
        results = prepared.failed + (run.results if run is not None else [])
        counters = {keys.model_stats(prepared.name): run.counters()} if run is not None else {}
        if prepared.gone:
            self.store.ack_gone(keys.MODEL_GROUP, prepared.gone)
        if results:
            self.store.complete(keys.MODEL_GROUP, results, {**counters, **prepared.metrics.take()})

    # -- reading ----------------------------------------------------------------------

    def _peek(self, block_ms: int) -> None:
        """Hold the oldest entry of every model stream that has one (one per stream)."""
        empty = [self.streams[name] for name, held in self._held.items() if not held]
        if not empty:
            return
        block = None if any(self._held.values()) else block_ms
        for entry in self.store.read(keys.MODEL_GROUP, self.consumer, empty, 1, block):
            self._held[self._model_of[entry.stream]].append(entry)

    def _read_for(self, name: str, count: int, block_ms: int) -> list[Entry]:
        held = self._held[name]
        if held:
            taken = held[:count]
            del held[:count]
            return taken
        return self.store.read(keys.MODEL_GROUP, self.consumer, [self.streams[name]], count, block_ms)

    # -- computing --------------------------------------------------------------------

    def _check_shapes(self, name: str, ready: Ready) -> tuple[Ready, list[StageResult]]:
        """Fail alone the items that cannot be stacked with the rest (inference.check_shapes)."""
        ready, rejected, shape = check_shapes(name, self.models[name], ready, self._shape.get(name))
        if shape is not None:
            self._shape[name] = shape
        return ready, rejected

    # -- lifecycle --------------------------------------------------------------------

    def setup(self) -> None:
        self.store.ensure_groups(list(self.streams.values()), keys.MODEL_GROUP)

    def recover(self) -> None:
        """Make the groups; queue every entry this consumer read but did not finish to be taken
        back, one per step (each a delivery more: one that keeps failing is given up)."""
        self.setup()
        for held in self._held.values():
            held.clear()
        self._suspect = None
        self.reclaimer.adopt_own()

    def finish(self) -> None:
        """Warm shutdown: run the entries already read, so none stay pending for this consumer."""
        for name, held in self._held.items():
            size = self.batching[name].max_batch_size
            while held:
                entries = held[:size]
                del held[:size]
                self.record(self.compute(self.prepare(name, entries)))

    def log_stats(self, force: bool = False) -> None:
        """Every ~30 s, one line per model that ran: batches, mean batch size, duty cycle."""
        self.stats_log.maybe_log(self.stats, force)

    def run(self, stop: threading.Event) -> None:
        heartbeat = Heartbeat(
            self.store.redis,
            self.consumer,
            self.kind,
            list(self.streams.values()),
            self.settings.heartbeat_interval_ms,
            self.settings.worker_ttl_ms,
        )
        with heartbeat:
            log.info(
                "consumer=%s serving models %s on %s", self.consumer, ", ".join(self.streams), self.device
            )
            if self.settings.model_overlap:
                run_overlapped(self, stop)
            else:
                runtime.run_loop(f"model {self.consumer}", self.run_once, stop, recover=self.recover)
            try:
                self.finish()
            except Exception:
                log.exception(
                    "consumer=%s could not finish its entries in hand; they stay pending", self.consumer
                )
        self.log_stats(force=True)
        runtime.retire_consumer(
            self.store.redis, keys.MODEL_GROUP, self.consumer, [keys.stream(s) for s in self.streams.values()]
        )
        log.info("consumer=%s stopped", self.consumer)


if __name__ == "__main__":  # `python -m workers.model_worker`: one model worker process
    from workers.model_main import cli

    sys.exit(cli())
