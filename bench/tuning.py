"""Each peer at its best on this machine before it is measured: a few configurations, each
started and loaded for a short window (the first workload, at the tuning concurrency), the one
with the most jobs/s kept for every measured turn. The JSON records every try and the pick.

What is tried, per peer (`workers`: LitServe's workers_per_device, Ray Serve's replicas, each a
process loading the models at `threads` torch threads):

- on the CPU: one process at every core's thread, or one single-threaded process per core (on
  2 cores LitServe does far better so, as dlpipe runs its replicas), each with the pipelines
  file's batching and without batching;
- on the simulated device (LitServe): 1 to 4 workers of 1 thread (the device is shared: more
  workers overlap more CPU work with it), each with the pipelines file's batch wait and a longer
  one (fuller batches).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

log = logging.getLogger(__name__)

LONG_BATCH_WAIT_MS = 30.0  # the simulated device's other batch_timeout for LitServe


def candidates(peer: str, device: str, cores: int, max_batch: int, delay_ms: float) -> list[dict[str, Any]]:
    """The configurations tried for `peer`; the first is how the bench ran it before tuning."""
    batching = {"max_batch_size": max_batch, "batch_timeout_ms": delay_ms}
    if device == "sim":
        if peer != "litserve":
            return [{"workers": 1, "threads": 1, **batching}]
        return [
            {"workers": w, "threads": 1, "max_batch_size": max_batch, "batch_timeout_ms": wait}
            for w in (1, 2, 3, 4)
            for wait in (delay_ms, max(delay_ms, LONG_BATCH_WAIT_MS))
        ]
    shapes = [{"workers": 1, "threads": cores}] + ([{"workers": cores, "threads": 1}] if cores > 1 else [])
    if peer == "ray":
        return [{**shape, **batching} for shape in shapes]
    unbatched = {"max_batch_size": 1, "batch_timeout_ms": 0.0}
    return [{**shape, **b} for shape in shapes for b in (batching, unbatched)]


def tune(
    peer: str, tries: list[dict[str, Any]], measure: Callable[[dict[str, Any]], dict[str, Any]], how: str
) -> dict[str, Any]:
    """Measure each configuration (`measure(config)` -> a window record, or raises); the best."""
    results = []
    for config in tries:
        try:
            window = measure(config)
            results.append(
                {
                    "config": config,
                    "jobs_per_s": window["jobs_per_s"],
                    "p99_ms": window["latency"]["p99_ms"],
                    "errors": window["errors"],
                }
            )
        except Exception as exc:  # noqa: BLE001 - a configuration that fails is recorded, not fatal
            log.error("tuning %s with %s failed: %s", peer, config, exc)
            results.append(
                {"config": config, "jobs_per_s": None, "error": f"{type(exc).__name__}: {exc}"[:500]}
            )
        log.info("tuning %s: %s -> %s jobs/s", peer, config, results[-1]["jobs_per_s"])
    ok = [r for r in results if r["jobs_per_s"] and not r.get("errors")]
    best = max(ok, key=lambda r: r["jobs_per_s"])["config"] if ok else tries[0]
    return {"how": how, "tries": results, "best": best}


# (turn, workload, clients, options with the tuning window, the trial's setup) -> a window record
Window = Callable[[Any, str, int, Any, Any], dict[str, Any]]


def tune_peers(
    setup: Any, ports: dict[str, int], opts: Any, peer_info: dict[str, dict[str, Any]], window: Window
) -> dict[str, Any]:
    """Each peer to be measured, at its best: setup.peer_config[peer] is set; what was tried."""
    from bench import simbench, systems  # noqa: PLC0415

    out: dict[str, Any] = {}
    concurrency = opts.tune_concurrency or sorted(opts.concurrency)[len(opts.concurrency) // 2]
    workload = opts.workloads[0]
    for peer in ("litserve", "ray"):
        if peer not in opts.systems or "error" in peer_info.get(peer, {}):
            continue
        tries = candidates(peer, opts.device, setup.cores, opts.max_batch_size, opts.batch_timeout_ms)
        if opts.tune_seconds <= 0:
            setup.peer_config[peer] = tries[0]
            out[peer] = {"how": "not tuned (--tune-seconds 0)", "tries": [], "best": tries[0]}
            continue
        how = (
            f"each configuration started, loaded {opts.warmup_s:g} s then measured {opts.tune_seconds:g} s "
            f"on {workload} at {concurrency} clients; the most jobs/s without errors kept"
        )

        def measure(
            config: dict[str, Any], peer: str = peer, tries: list[dict[str, Any]] = tries
        ) -> dict[str, Any]:
            trial = replace(
                simbench.turn_setup(setup, opts.sim, f"tune-{peer}", tries.index(config)),
                peer_config={**setup.peer_config, peer: config},
            )
            turn = systems.start(peer, trial, ports[peer])
            try:
                return window(
                    turn,
                    workload,
                    concurrency,
                    replace(opts, duration_s=opts.tune_seconds, requests=None),
                    trial,
                )
            finally:
                systems.stop(turn, ports[peer])

        out[peer] = tune(peer, tries, measure, how)
        setup.peer_config[peer] = out[peer]["best"]
    return out
