"""`dlpipe worker model`: batched inference for every model some pipeline uses.

One process owns the device. Each step: pick the model whose waiting entry is oldest,
fill a batch for it (collect_batch: up to max_batch_size, at most max_batch_delay_ms
after the first entry), then load -> collate -> device -> predict -> split -> complete.
An item that cannot join the batch (undecodable, wrong shape) fails alone; an exception
in collate/predict/split fails every item of the batch with the reason.

`next_batch()` (pick + fill) and `run_batch()` (compute + record) are separate so a
later change can fill the next batch while one runs.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch

from shared import keys
from shared.codecs import CodecError
from shared.logs import setup_logging
from shared.pipeline_spec import PipelineConfigError, PipelinesConfig, resolve
from shared.settings import Settings
from workers import runtime
from workers.batching import collect_batch
from workers.heartbeat import Heartbeat
from workers.models.base import Model
from workers.reclaim import Reclaimer, take_work
from workers.store import Entry, StageResult, Store

log = logging.getLogger("workers.model_worker")  # not __main__ under `python -m`

STATS_LOG_INTERVAL_S = 30.0

Shape = tuple[tuple[int, ...], str]  # an input array's shape and dtype


@dataclass
class ModelStats:
    batches: int = 0  # forward passes run (failed ones included)
    failed_batches: int = 0
    items: int = 0  # entries handled, including items failed before the forward pass
    batched_items: int = 0  # sum of forward batch sizes
    busy_s: float = 0.0  # time in collate + device copy + predict + split

    @property
    def mean_batch(self) -> float:
        return self.batched_items / self.batches if self.batches else 0.0

    def minus(self, other: ModelStats) -> ModelStats:
        return ModelStats(*(getattr(self, f) - getattr(other, f) for f in self.__dataclass_fields__))


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
    """A tensor or a dict of tensors onto `device` (pinned, non-blocking copies on CUDA)."""
    if isinstance(batch, dict):
        return {key: to_device(value, device) for key, value in batch.items()}
    if not isinstance(batch, torch.Tensor) or batch.device == device:
        return batch
    if device.type == "cuda":
        return batch.pin_memory().to(device, non_blocking=True)
    return batch.to(device)


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
        )
        self._shape: dict[str, Shape] = {}  # model -> the last (shape, dtype) that ran
        self.stats: dict[str, ModelStats] = defaultdict(ModelStats)
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
        """Load the batch's values, run what can run, record every result in one round trip."""
        loaded = self.store.load(entries)
        gone = [entry for entry, values in zip(entries, loaded, strict=True) if values is None]
        results: list[StageResult] = []
        ready: list[tuple[Entry, Any]] = []
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
        if ready:
            results += self._forward(name, ready)
        self.stats[name].items += len(entries)
        if gone:
            self.store.ack_gone(keys.MODEL_GROUP, gone)
        if results:
            self.store.complete(keys.MODEL_GROUP, results)

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

    def _check_shapes(
        self, name: str, ready: list[tuple[Entry, Any]]
    ) -> tuple[list[tuple[Entry, Any]], list[StageResult]]:
        """With the default (stacking) collate, items must be arrays of one shape and dtype.

        The batch's shape is the last one that ran, else the most common; the others fail
        alone. Models with their own collate (padding, dicts) check their own inputs.
        """
        if type(self.models[name]).collate is not Model.collate or not ready:
            return ready, []
        kinds: list[Shape | None] = [
            (v.shape, v.dtype.str) if isinstance(v, np.ndarray) else None for _, v in ready
        ]
        counts = Counter(k for k in kinds if k is not None)
        expected = self._shape.get(name)
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
        if keep and expected is not None:
            self._shape[name] = expected
        return keep, rejected

    def _forward(self, name: str, ready: list[tuple[Entry, Any]]) -> list[StageResult]:
        model, stats = self.models[name], self.stats[name]
        entries = [entry for entry, _ in ready]
        started = self.clock()
        try:
            with torch.inference_mode():
                batch = to_device(model.collate([value for _, value in ready]), self.device)
                output = model.predict(batch)
                rows = model.split(output)
            if len(rows) != len(entries):
                raise RuntimeError(f"split() returned {len(rows)} rows for {len(entries)} items")
        except Exception as exc:
            jobs = ",".join(sorted({e.item.job_id for e in entries}))
            log.exception("model=%s batch of %d failed (jobs=%s)", name, len(entries), jobs)
            stats.failed_batches += 1
            reason = f"{entries[0].item.stage}: {type(exc).__name__}: {exc}"
            return [StageResult(entry, error=reason) for entry in entries]
        finally:
            stats.busy_s += self.clock() - started
            stats.batches += 1
            stats.batched_items += len(entries)
        return [StageResult(entry, value=row) for entry, row in zip(entries, rows, strict=True)]

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
