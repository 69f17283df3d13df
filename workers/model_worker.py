"""`dlpipe worker model`: batched inference for every model some pipeline uses.

One process owns the device. Each step: pick the model whose waiting entry is oldest,
fill a batch for it (collect_batch: up to max_batch_size, at most max_batch_delay_ms
after the first entry), then load -> collate -> device -> predict -> split -> complete.
An item that cannot join the batch (undecodable, wrong shape) fails alone; an exception
in collate/predict/split fails every item of the batch with the reason. The compute
(device, model loading, shape checks, the forward pass) is in workers/inference.py.

Each batch's counters go to the model's stats hash in Redis (keys.model_stats: batches,
items, forward_ms, failed_batches) in the same round trip as its results, so other
processes (benchmarks, metrics) can read them; this process also logs them every ~30 s.

`next_batch()` (pick + fill) and `run_batch()` (compute + record) are separate so a
later change can fill the next batch while one runs.
"""

from __future__ import annotations

import argparse
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
from shared.logs import setup_logging
from shared.settings import Settings
from workers import runtime
from workers.batching import collect_batch
from workers.heartbeat import Heartbeat
from workers.inference import ModelStats, Ready, Shape, check_shapes, forward, load_models, pick_device
from workers.metrics import StageMetrics
from workers.models.base import Model
from workers.reclaim import Reclaimer, take_work
from workers.store import Entry, StageResult, Store

log = logging.getLogger("workers.model_worker")  # not __main__ under `python -m`

STATS_LOG_INTERVAL_S = 30.0


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
        self.metrics = StageMetrics()  # sent with each batch's results (GET /metrics)
        self._logged: dict[str, ModelStats] = {}
        self._next_log = clock() + STATS_LOG_INTERVAL_S
        self._log_window_start = clock()

    # -- the step ---------------------------------------------------------------------

    def run_once(self, block_ms: int | None = None) -> int:
        """Take back a suspect entry (if due), pick a model, fill its batch, run it.
        Returns the entries handled."""
        given_up = self.take_suspect()
        batch = self.next_batch(self.settings.read_block_ms if block_ms is None else block_ms)
        if batch is not None:
            self.run_batch(*batch)
        self.log_stats()
        return given_up + (len(batch[1]) if batch else 0)

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
        batching = self.store.config.models[name].batching
        assert batching is not None  # the config loader requires it for used models
        entries = collect_batch(
            partial(self._read_for, name),
            self.clock,
            batching.max_batch_size,
            batching.max_batch_delay_ms,
            first_block_ms=1,
        )
        return name, entries

    def run_batch(self, name: str, entries: list[Entry]) -> None:
        """Load the batch's values, run what can run, record every result (and the model's
        counters, if the forward pass ran) in one round trip."""
        self.metrics.waited(entries)
        loaded = self.store.load(entries)
        gone = [entry for entry, values in zip(entries, loaded, strict=True) if values is None]
        results: list[StageResult] = []
        ready: Ready = []
        for entry, values in zip(entries, loaded, strict=True):
            if values is None:
                continue
            bad = next((v for v in values if isinstance(v, CodecError)), None)
            if bad is not None:
                results.append(
                    StageResult(entry, error=f"{entry.item.stage}: input cannot be decoded: {bad}")
                )
            else:
                ready.append((entry, values[0] if len(values) == 1 else values))
        ready, rejected = self._check_shapes(name, ready)
        results += rejected
        counters: dict[str, dict[str, int | float]] = {}
        if ready:
            run = forward(name, self.models[name], ready, self.device, self.clock)
            results += run.results
            self.stats[name].add(run)
            counters[keys.model_stats(name)] = run.counters()
            self.metrics.forward(name, run.results, run.seconds)
        self.stats[name].items += len(entries)
        if gone:
            self.store.ack_gone(keys.MODEL_GROUP, gone)
        if results:
            self.store.complete(keys.MODEL_GROUP, results, {**counters, **self.metrics.take()})

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
            size = self.store.config.models[name].batching.max_batch_size  # type: ignore[union-attr]
            while held:
                entries = held[:size]
                del held[:size]
                self.run_batch(name, entries)

    def log_stats(self, force: bool = False) -> None:
        """Every ~30 s, one line per model that ran: batches, mean batch size, duty cycle."""
        now = self.clock()
        if not force and now < self._next_log:
            return
        window = max(now - self._log_window_start, 1e-9)
        for name, total in self.stats.items():
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
        self._log_window_start, self._next_log = now, now + STATS_LOG_INTERVAL_S

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


def main(settings: Settings, models: list[str] | None = None) -> int:
    """Load the models, then serve their streams until SIGTERM/SIGINT."""
    setup_logging(settings.log_level, "model")
    stop = threading.Event()
    runtime.install_stop_signals(stop)
    config = runtime.load_config(settings)
    device = pick_device(settings)
    torch.set_num_threads(settings.torch_threads)
    loaded = load_models(config, models, device)
    if not loaded:
        log.error(
            "no model to serve (asked for %s; pipelines use %s)", models, ", ".join(config.model_streams())
        )
        return 2
    longest = max(b.max_batch_delay_ms for m in loaded if (b := config.models[m].batching) is not None)
    store = Store(runtime.redis_client(settings, longest), config, settings.job_ttl_s)
    ModelWorker(store, settings, runtime.new_consumer_id(), loaded, device).run(stop)
    return 0


def _cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.model_worker")
    parser.add_argument("--models", default=None, help="comma-separated model names (default: all used)")
    args = parser.parse_args(argv)
    names = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    return main(Settings(), names)


if __name__ == "__main__":
    sys.exit(_cli())
