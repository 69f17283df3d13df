"""What every worker process shares: its id, warm shutdown on signals, the Redis client,
the pipelines config, and the step loop that survives Redis going away.

A worker is a `run_once()` step (one read, one batch) driven by `run_loop` until a stop
event is set. The first SIGTERM/SIGINT sets that event: the step in hand finishes and its
entries are acknowledged, then the process exits 0. A second signal exits at once.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

import redis

from shared import redis_conn
from shared.backoff import Backoff
from shared.callables import check_callables, resolve
from shared.pipeline_spec import PipelineConfigError, PipelinesConfig, StageSpec, load_pipelines
from shared.settings import Settings

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

# Threads of the native libraries a CPU worker process may load (numpy's BLAS, OpenMP):
# one each, so N preprocess processes use N cores, not N x cores.
SINGLE_THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
    "VECLIB_MAXIMUM_THREADS": "1",
}


def new_consumer_id() -> str:
    """A consumer/worker id unique to this process: hostname-pid-random."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def install_stop_signals(
    stop: threading.Event,
    *,
    on_second: Callable[[], None] | None = None,
    signals: tuple[signal.Signals, ...] = STOP_SIGNALS,
) -> None:
    """First SIGTERM/SIGINT: set `stop` (warm shutdown). Second: run `on_second`, exit 1 at once.

    Call from the main thread. The loop notices `stop` after its current step, so a
    blocking read delays the exit by at most `read_block_ms`.
    """
    received = 0

    def handle(signum: int, _frame: FrameType | None) -> None:
        nonlocal received
        received += 1
        name = signal.Signals(signum).name
        if received == 1:
            log.info("%s: finishing the work in hand, then exiting (send it again to exit now)", name)
            stop.set()
            return
        log.warning("%s again: exiting now; entries in hand stay pending", name)
        if on_second is not None:
            on_second()
        for handler in logging.getLogger().handlers:
            handler.flush()
        sys.stderr.flush()
        os._exit(1)

    for sig in signals:
        signal.signal(sig, handle)


def watch_parent(stop: threading.Event, parent_pid: int, interval_s: float = 1.0) -> threading.Thread:
    """Set `stop` when the parent process is gone (a supervised child must not outlive it)."""

    def watch() -> None:
        while not stop.wait(interval_s):
            if os.getppid() != parent_pid:
                log.warning("parent process %d is gone: shutting down", parent_pid)
                stop.set()

    thread = threading.Thread(target=watch, name="watch-parent", daemon=True)
    thread.start()
    return thread


def redis_client(
    settings: Settings, longest_block_ms: int | float | None = None, *, name: str | None = None
) -> redis.Redis:
    """A client for the configured Redis (URL or sentinels, shared/redis_conn.py) whose socket
    timeout outlasts the longest blocking read and a WAIT. `name`: the worker's id, given to each of
    its connections (CLIENT SETNAME), so that `CLIENT LIST` tells which worker, on which host's
    address, holds each one (the heartbeat's `host` is a host name, the same in every container or
    network namespace that shares it)."""
    if not settings.redis_configured():
        raise PipelineConfigError(
            "workers need DLPIPE_REDIS_URL or DLPIPE_REDIS_SENTINELS (`dlpipe up` passes them on)"
        )
    block_s = max(settings.read_block_ms, longest_block_ms or 0, settings.redis_wait_timeout_ms) / 1000
    named = {"client_name": name} if name else {}
    return redis_conn.sync_client(settings, socket_timeout=block_s + 5.0, health_check_interval=30, **named)


def load_config(settings: Settings) -> PipelinesConfig:
    """Load and validate the pipelines file; check every stage and model module can be found.

    Nothing is imported here: each worker imports only what it runs (the preprocess
    processes must not import torch, which the model classes do).
    """
    config = load_pipelines(settings.pipelines_file)
    check_callables(config, import_them=False)
    return config


def resolve_stage_functions(config: PipelinesConfig) -> dict[str, Callable[..., Any]]:
    """Import every preprocess/postprocess function: 'module:function' -> the function."""
    functions: dict[str, Callable[..., Any]] = {}
    for pipeline in config.pipelines.values():
        for stage in pipeline.stages:
            if stage.fn and stage.fn not in functions:
                functions[stage.fn] = resolve_stage_function(pipeline.name, stage)
    return functions


def resolve_stage_function(pipeline: str, stage: StageSpec) -> Callable[..., Any]:
    """One stage's function, or PipelineConfigError naming the pipeline and stage."""
    where = f"pipeline {pipeline!r}, stage {stage.name!r}"
    try:
        fn = resolve(stage.fn or "")
    except (ImportError, PipelineConfigError) as exc:
        raise PipelineConfigError(f"{where}: cannot load {stage.fn!r}: {exc}") from None
    if not callable(fn):
        raise PipelineConfigError(f"{where}: {stage.fn!r} is not callable")
    return fn


def configure_stage_modules(functions: dict[str, Callable[..., Any]], settings: Settings) -> None:
    """Give each stage module that wants them this worker's settings.

    A module holding stage functions may define `configure(settings)`; it is called once,
    at worker start (workers/transforms/image.py uses it for fetch and data-root limits).
    """
    for module_name in sorted({path.partition(":")[0] for path in functions}):
        configure = getattr(sys.modules.get(module_name), "configure", None)
        if callable(configure):
            configure(settings)


def run_loop(
    name: str,
    step: Callable[[], Any],
    stop: threading.Event,
    *,
    recover: Callable[[], None],
    backoff: Backoff | None = None,
) -> None:
    """Call `step()` until `stop` is set; never die on an error.

    `recover()` runs first, and again after any error, before the next step: it makes
    the consumer groups (again: a restarted Redis may have lost them) and takes back the
    entries this consumer read but did not finish. A Redis error (connection lost,
    timeout, NOGROUP) is logged and waited out with a growing delay; any other exception
    is logged with its traceback and treated the same way.
    """
    backoff = backoff or Backoff()
    next_delay = backoff.delays()
    must_recover = True
    while not stop.is_set():
        try:
            if must_recover:
                recover()
                must_recover = False
            step()
            next_delay = backoff.delays()
            continue
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            delay = next_delay()
            log.warning("%s: redis unavailable (%s); retrying in %.1fs", name, exc, delay)
        except redis.RedisError as exc:
            delay = next_delay()
            log.warning("%s: redis error (%s); retrying in %.1fs", name, exc, delay)
        except Exception:
            delay = next_delay()
            log.exception("%s: step failed; retrying in %.1fs", name, delay)
        must_recover = True
        stop.wait(delay)


def retire_consumer(client: redis.Redis, group: str, consumer: str, stream_keys: list[str]) -> None:
    """On a clean exit, delete this consumer from its groups where it holds nothing pending.

    Consumer ids are per process, so without this every restart would leave a dead
    consumer behind in XINFO CONSUMERS. A consumer with pending entries is kept: those
    entries would be lost with it.
    """
    for key in stream_keys:
        try:
            if not client.xpending_range(key, group, min="-", max="+", count=1, consumername=consumer):
                client.xgroup_delconsumer(key, group, consumer)
        except redis.RedisError as exc:
            log.warning("could not retire consumer %s on %s: %s", consumer, key, exc)
