"""One measured window of a started system, and its record in the run's JSON: the load (the bench's
client, bench/client.py, or the API-alone turn's lean one, bench/rawload.py), the processes' CPU
times and the model counters read at both ends of it, the latency, and on the simulated device
what the device logged in it (bench/simbench.py)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from bench import noop, procs, rawload, simbench, systems
from bench.client import Load, run_load
from bench.options import Options
from bench.stats import counters_delta, latency_summary, model_activity

log = logging.getLogger("bench.orchestrate")  # a window's lines are the run's: one logger name

# At each end of a window: the processes' CPU times, the model counters, time.monotonic().
Mark = tuple[procs.CpuSnapshot, dict[str, dict[str, float]] | None, float]


def window(
    turn: systems.Turn,
    workload: str,
    concurrency: int | str,
    bodies: list[bytes],
    opts: Options,
    setup: systems.Setup | None = None,
    arrivals_per_s: float | None = None,
) -> dict[str, Any]:
    """One measured window: `concurrency` closed-loop clients, or Poisson arrivals (then
    `concurrency` is the window's label)."""
    load = Load(
        path=f"/v1/pipelines/{workload}/jobs",
        bodies=bodies,
        concurrency=concurrency if isinstance(concurrency, int) else 1,
        warmup_s=opts.warmup_s,
        duration_s=opts.duration_s,
        requests=opts.requests,
        poll_interval_s=None if opts.poll_interval_ms is None else opts.poll_interval_ms / 1000.0,
        arrivals_per_s=arrivals_per_s,
    )
    marks: dict[str, Mark] = {}

    def on_mark(which: str) -> None:
        marks[which] = (
            procs.cpu_snapshot(turn.processes(), turn.role),
            turn.counters(workload),
            time.monotonic(),
        )

    seen = asyncio.run(run_load(turn.base_url, load, on_mark))
    out = record(turn, workload, concurrency, seen, marks)
    if arrivals_per_s is not None:
        out["arrivals_per_s"] = round(arrivals_per_s, 3)
    device = simbench.device_record(
        turn.device_log, marks["start"][2], marks["end"][2], out["jobs_per_s"], opts.sim, workload
    )
    if device is not None:
        out["device"] = device
        log.info(
            "%s %s %s: device duty %.3f, %.3f of its ceiling, batches %s",
            turn.system,
            workload,
            concurrency,
            device["duty_cycle"],
            device["of_ceiling"] or 0,
            {m: v["mean_batch_size"] for m, v in device["models"].items()},
        )
    return out


def api_window(turn: systems.Turn, port: int, concurrency: int, opts: Options) -> dict[str, Any]:
    """The API alone: no-op jobs (bench/noop.py) from a lean client, answered 202 or counted as errors."""
    marks: dict[str, Mark] = {}

    def on_mark(which: str) -> None:
        marks[which] = (procs.cpu_snapshot(turn.processes(), turn.role), None, time.monotonic())

    request = rawload.request_bytes("127.0.0.1", port, f"/v1/pipelines/{noop.PIPELINE}/jobs", noop.BODY)
    seen = asyncio.run(
        rawload.run(
            "127.0.0.1",
            port,
            request,
            concurrency,
            min(opts.warmup_s, 2.0),
            opts.api_duration_s,
            on_mark=on_mark,
        )
    )
    out = record(turn, noop.PIPELINE, concurrency, seen, marks)
    out["statuses"] = {str(k): v for k, v in sorted(seen.statuses.items())}
    return out


def record(
    turn: systems.Turn, workload: str, concurrency: int | str, window: Any, marks: dict[str, Mark]
) -> dict[str, Any]:
    """A measured window as the run's JSON keeps it."""
    n = window.completed
    cpu = procs.cpu_by_role(marks["start"][0], marks["end"][0])
    models = None
    if marks["end"][1] is not None:
        delta = counters_delta(marks["start"][1] or {}, marks["end"][1])
        models = {
            name: model_activity(d, window.wall_s, turn.model_workers) for name, d in sorted(delta.items())
        }
    latency = latency_summary(window.latencies_s)
    result: dict[str, Any] = {
        "workload": workload,
        "concurrency": concurrency,
        "completed": n,
        "errors": window.errors,
        "error_samples": window.error_samples,
        "wall_s": round(window.wall_s, 3),
        "jobs_per_s": round(n / window.wall_s, 3) if window.wall_s > 0 else None,
        "latency": latency,
        "polls_per_job": round(getattr(window, "polls", 0) / n, 2) if n else None,
        "cpu_s_per_job": {role: round(v / n, 5) for role, v in sorted(cpu.items())} if n else None,
        "cpu_s_per_job_total": round(sum(cpu.values()) / n, 5) if n else None,
        "client_cpu_s_per_job": round(window.client_cpu_s / n, 5) if n else None,
        "models": models,
    }
    log.info(
        "%s %s c=%s: %.2f jobs/s, p50 %s ms, p99 %s ms, %d errors",
        turn.system,
        workload,
        concurrency,
        result["jobs_per_s"] or 0,
        result["latency"]["p50_ms"],
        result["latency"]["p99_ms"],
        window.errors,
    )
    return result
