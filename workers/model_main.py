"""Starting model workers: `dlpipe worker model` (serve) and `python -m workers.model_main`
(one process, main).

With DLPIPE_MODEL_REPLICAS above 1 (the default on a CPU with several cores: shared/cores.py),
`serve` supervises that many single-process model workers (workers/pool.py), each loading every
model and reading the model streams with its own consumer id, so the replicas share the work
item by item; one that dies is restarted. With a GPU the default is one process, which owns it.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading

import torch

from shared.logs import setup_logging
from shared.settings import Settings
from workers import pool, runtime
from workers.inference import load_models, model_batching, pick_device
from workers.model_worker import ModelWorker
from workers.store import Store

log = logging.getLogger("workers.model_worker")


def serve(settings: Settings, models: list[str] | None = None) -> int:
    """`dlpipe worker model`: DLPIPE_MODEL_REPLICAS model worker processes (1: this one)."""
    if settings.model_replicas <= 1:
        return main(settings, models)
    setup_logging(settings.log_level, "model-main")
    runtime.redis_client(settings).close()  # DLPIPE_REDIS_URL must be set; Redis itself may come later
    runtime.load_config(settings)  # fail here, once, rather than in every replica
    argv = ["-m", "workers.model_main", "--child"] + (["--models", ",".join(models)] if models else [])
    return pool.supervise("model", argv, settings.model_replicas, settings)


def main(settings: Settings, models: list[str] | None = None, child: bool = False) -> int:
    """Load the models, then serve their streams until SIGTERM/SIGINT (a replica: its parent's
    SIGTERM, or the parent gone)."""
    setup_logging(settings.log_level, "model")
    stop = threading.Event()
    if child:
        pool.prepare_child(stop)
    else:
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
    longest = max(b.max_batch_delay_ms for b in model_batching(config, list(loaded), device).values())
    consumer = runtime.new_consumer_id()
    store = Store(
        runtime.redis_client(settings, longest, name=consumer),
        config,
        settings.job_ttl_s,
        settings.max_output_file_bytes,
    )
    ModelWorker(store, settings, consumer, loaded, device).run(stop)
    return 0


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.model_main")
    parser.add_argument("--models", default=None, help="comma-separated model names (default: all used)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    names = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    return main(Settings(), names, child=args.child)


if __name__ == "__main__":
    sys.exit(cli())
