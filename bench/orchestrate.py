"""One bench run: the peers tuned (bench/tuning.py), then the turns in interleaved order (limit,
stages, then each HTTP system, once per repeat), each turn's servers started, measured and
stopped by process id before the next. On the simulated device (`device="sim"`, bench/simbench.py)
each turn has a device of its own, and each workload is also loaded open-loop. What a run is told
is bench/options.py; each measured window and its record, bench/windows.py."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import noop, peers, simbench, stack, systems, tuning, windows
from bench.options import Options
from bench.photos import fhd_jpegs, request_body
from bench.stats import turn_order

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent

OVERLOAD = 1.1  # an open-loop rate this much over a system's best closed-loop jobs/s is not run


def dlpipe_settings(opts: Options) -> dict[str, Any]:
    """The settings `dlpipe up` will run with (this environment plus --dlpipe-env)."""
    from shared.settings import Settings  # noqa: PLC0415

    old = {k: os.environ.get(k) for k in opts.dlpipe_env}
    os.environ.update(opts.dlpipe_env)
    try:
        s = Settings()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return {
        "torch_threads": s.torch_threads,
        "model_replicas": s.model_replicas,
        "preprocess_concurrency": s.preprocess_concurrency,
        "pipelines_file": str(s.pipelines_file),
    }


def run(opts: Options) -> dict[str, Any]:
    started = time.monotonic()
    run_dir = (opts.run_dir / datetime.now(UTC).strftime("%Y%m%d-%H%M%S")).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    cores = os.cpu_count() or 1
    dl_settings = dlpipe_settings(opts)
    peer_envs, peer_info = _prepare_peers(opts)
    setup = systems.Setup(
        run_dir=run_dir,
        workloads=opts.workloads,
        cores=cores,
        peer_threads=opts.peer_threads,
        max_batch_size=opts.max_batch_size,
        batch_timeout_ms=opts.batch_timeout_ms,
        dlpipe_env=opts.dlpipe_env,
        peers=peer_envs,
        device=opts.device,
    )
    if opts.device == "sim":
        dl_settings = {**dl_settings, **stack.settings_summary(setup)}
    bodies = [request_body(jpeg) for jpeg in fhd_jpegs()]
    ports = {name: opts.base_port + i for i, name in enumerate(systems.HTTP_SYSTEMS)}
    tuned = tuning.tune_peers(
        setup,
        ports,
        opts,
        peer_info,
        lambda turn, workload, clients, short, trial: windows.window(
            turn, workload, clients, bodies, short, trial
        ),
    )
    turns: list[dict[str, Any]] = []
    order = [
        (r, s)
        for r, s in turn_order(opts.systems, opts.repeats)
        if s not in peer_info or "error" not in peer_info[s]
    ]
    for n, (repeat, system) in enumerate(order, 1):
        log.info("turn %d/%d: repeat %d, %s", n, len(order), repeat + 1, system)
        turn: dict[str, Any] = {"repeat": repeat, "system": system, "load_avg_before": os.getloadavg()[0]}
        t0 = time.monotonic()
        try:
            if system == "limit":
                turn["limit"] = _measure(
                    [
                        "limit",
                        "--batches",
                        _csv(opts.limit_batches),
                        "--threads",
                        _csv(opts.limit_threads),
                        "--seconds",
                        str(opts.limit_seconds),
                    ]
                )
            elif system == "stages":
                turn["stages"] = _measure(
                    [
                        "stages",
                        "--workloads",
                        ",".join(opts.workloads),
                        "--threads",
                        str(dl_settings["torch_threads"]),
                        "--seconds",
                        str(opts.stage_seconds),
                    ]
                )
            else:
                turn.update(_http_turn(system, setup, ports[system], bodies, opts, repeat))
        except Exception as exc:  # noqa: BLE001 - one failed turn is recorded, the run goes on
            log.error("turn %s (repeat %d) failed: %s", system, repeat + 1, exc)
            turn["error"] = f"{type(exc).__name__}: {exc}"[:2000]
        turn["turn_s"] = round(time.monotonic() - t0, 1)
        turns.append(turn)
    return {
        "run_dir": str(run_dir),
        "wall_s": round(time.monotonic() - started, 1),
        "dlpipe_settings": dl_settings,
        "peers": peer_info,
        "tuning": tuned,
        "sim": opts.sim.as_dict() if opts.sim else None,
        "turns": turns,
    }


def _csv(values: list[int]) -> str:
    return ",".join(str(v) for v in values)


def _prepare_peers(opts: Options) -> tuple[dict[str, peers.PeerEnv], dict[str, dict[str, Any]]]:
    envs: dict[str, peers.PeerEnv] = {}
    info: dict[str, dict[str, Any]] = {}
    for name in peers.PEERS:
        if name not in opts.systems:
            continue
        try:
            envs[name] = peers.ensure(name, opts.cache_dir, install=opts.install_peers)
            info[name] = envs[name].as_dict()
        except Exception as exc:  # noqa: BLE001 - a peer that cannot be installed is reported, not fatal
            log.error("peer %s unavailable: %s", name, exc)
            info[name] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
    return envs, info


def _measure(args: list[str], timeout_s: float = 900.0) -> dict[str, Any]:
    """`python -m bench.measure ARGS` in a child process; its JSON line."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.measure", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"bench.measure {args[0]} exited {done.returncode}: {done.stderr[-1500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _http_turn(
    system: str, setup: systems.Setup, port: int, bodies: list[bytes], opts: Options, repeat: int = 0
) -> dict[str, Any]:
    if system == "api":
        return _api_turn(setup, port, opts)
    t0 = time.monotonic()
    setup = simbench.turn_setup(setup, opts.sim, system, repeat)
    turn = systems.start(system, setup, port)
    out: dict[str, Any] = {"start_s": round(time.monotonic() - t0, 1), "windows": []}
    if system in setup.peer_config:
        out["config"] = setup.peer_config[system]
    try:
        for workload in opts.workloads:
            closed_best = 0.0
            for label, rate in simbench.loads(opts.concurrency, opts.open_loop, opts.sim, workload):
                if rate is not None and rate > closed_best * OVERLOAD:
                    # Arrivals faster than the system ever served: its queue (and latency) would only
                    # grow, and what is left in flight would spill into the next window.
                    out.setdefault("skipped", []).append(
                        {
                            "workload": workload,
                            "load": label,
                            "arrivals_per_s": round(rate, 3),
                            "reason": f"over {closed_best:.2f} jobs/s, the most it "
                            "served closed-loop: it cannot keep up",
                        }
                    )
                    log.info(
                        "%s %s %s skipped: %.2f/s arrivals, at most %.2f jobs/s served",
                        system,
                        workload,
                        label,
                        rate,
                        closed_best,
                    )
                    continue
                window = windows.window(turn, workload, label, bodies, opts, setup, rate)
                out["windows"].append(window)
                if rate is None:
                    closed_best = max(closed_best, window["jobs_per_s"] or 0.0)
    finally:
        t1 = time.monotonic()
        systems.stop(turn, port)
        out["stop_s"] = round(time.monotonic() - t1, 1)
    return out


def _api_turn(setup: systems.Setup, port: int, opts: Options) -> dict[str, Any]:
    """The API alone, once per number of API processes (`--api-workers`), each at every
    `--api-concurrency`; a window's workload names the processes: `noop (2 API processes)`."""
    out: dict[str, Any] = {"start_s": 0.0, "stop_s": 0.0, "windows": []}
    for workers in opts.api_workers:
        t0 = time.monotonic()
        turn = systems.start("api", replace(setup, api_workers=workers), port)
        out["start_s"] = round(out["start_s"] + time.monotonic() - t0, 1)
        try:
            for concurrency in opts.api_concurrency:
                window = windows.api_window(turn, port, concurrency, opts)
                window["workload"] = f"{noop.PIPELINE} ({workers} API process{'es' if workers > 1 else ''})"
                window["api_workers"] = workers
                out["windows"].append(window)
        finally:
            t1 = time.monotonic()
            systems.stop(turn, port)
            out["stop_s"] = round(out["stop_s"] + time.monotonic() - t1, 1)
    return out
