"""`dlpipe worker preprocess`: the CPU stages (preprocess and postprocess) of every pipeline.

`main` supervises N child processes (`python -m workers.preprocess --child`, workers/pool.py),
each running one PreprocessWorker over all CPU streams with one native thread (OMP/BLAS), and
restarts one that dies; warm shutdown for all at the first SIGTERM/SIGINT. This module and
what it imports must not import torch.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from collections.abc import Callable
from typing import Any

from shared import keys
from shared.logs import setup_logging
from shared.priority import CPU_READ_COUNT
from shared.settings import Settings
from workers import pool, runtime
from workers.intake import PriorityReader
from workers.metrics import StageMetrics
from workers.reclaim import take_work
from workers.stage_worker import StageWorker
from workers.stagecall import call_stage
from workers.store import Entry, StageResult, Store

log = logging.getLogger("workers.preprocess")  # not __main__ under `python -m`

READ_COUNT = CPU_READ_COUNT  # entries per stage per step (all priorities): shared/priority.py


class PreprocessWorker(StageWorker):
    kind = "preprocess"
    group = keys.CPU_GROUP

    def __init__(
        self,
        store: Store,
        settings: Settings,
        consumer: str,
        functions: dict[str, Callable[..., Any]] | None = None,
    ) -> None:
        stages = store.config.cpu_streams()
        self.intake = PriorityReader(store, keys.CPU_GROUP, consumer, stages, READ_COUNT)
        self.streams = self.intake.streams  # every stage's stream of every priority
        super().__init__(store.redis, settings, consumer, self.streams)
        self.store = store
        self.functions = functions if functions is not None else runtime.resolve_stage_functions(store.config)
        runtime.configure_stage_modules(self.functions, settings)
        self.metrics = StageMetrics()  # sent with each step's results (GET /metrics)

    def setup(self) -> None:
        self.store.ensure_groups(self.streams, self.group)

    def serving(self) -> str:
        return f"{len(self.streams)} CPU streams"

    def run_once(self, block_ms: int | None = None) -> int:
        """Run one entry taken back (own unfinished, or idle under a dead worker) alone, or
        read one small batch; run each entry's stage, record all results. Returns entries handled."""
        suspects, handled = take_work(self.reclaimer, self.store)
        if suspects:  # alone: if it kills this process, no other entry is charged a delivery
            self.process(suspects)
            return handled
        block = self.settings.read_block_ms if block_ms is None else block_ms
        entries = self.intake.read(block)
        if entries:
            self.process(entries)
        return handled + len(entries)

    def process(self, entries: list[Entry]) -> None:
        self.metrics.waited(entries)
        loaded = self.store.load(entries)
        pairs = list(zip(entries, loaded, strict=True))
        gone = [entry for entry, values in pairs if values is None]
        results = [self.metrics.timed(self.run_stage, e, values) for e, values in pairs if values is not None]
        if gone:
            for entry in gone:
                log.info(
                    "job=%s stage=%s index=%d item is gone; skipped",
                    entry.item.job_id,
                    entry.item.stage,
                    entry.item.index,
                )
            self.store.ack_gone(keys.CPU_GROUP, gone)
        if results:
            self.store.complete(keys.CPU_GROUP, results, self.metrics.take())

    def run_stage(self, entry: Entry, values: list[Any]) -> StageResult:
        """One stage on one item: fn(*needs, **params); any failure fails only this item."""
        stage = self.store.stage_of(entry.item)
        return call_stage(self.functions[stage.fn or ""], stage, entry, values)


def run_child(settings: Settings) -> int:
    """One preprocess process: a PreprocessWorker until SIGTERM (or its parent dies)."""
    setup_logging(settings.log_level, "preprocess")
    stop = threading.Event()
    pool.prepare_child(stop)
    config = runtime.load_config(settings)
    consumer = runtime.new_consumer_id()
    store = Store(
        runtime.redis_client(settings, name=consumer),
        config,
        settings.job_ttl_s,
        settings.max_output_file_bytes,
    )
    PreprocessWorker(store, settings, consumer).run(stop)
    return 0


def main(settings: Settings, concurrency: int) -> int:
    """Run `concurrency` preprocess processes until SIGTERM/SIGINT; 0 if all exit cleanly."""
    setup_logging(settings.log_level, "preprocess-main")
    runtime.redis_client(settings).close()  # DLPIPE_REDIS_URL must be set; Redis itself may come later
    config = runtime.load_config(settings)
    runtime.resolve_stage_functions(config)  # fail here, once, rather than in every child
    return pool.supervise("preprocess", ["-m", "workers.preprocess", "--child"], concurrency, settings)


def _cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.preprocess")
    parser.add_argument("--concurrency", type=int, default=None)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    settings = Settings()
    if args.child:
        return run_child(settings)
    return main(settings, args.concurrency or settings.preprocess_concurrency)


if __name__ == "__main__":
    sys.exit(_cli())
