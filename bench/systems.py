"""The HTTP systems the bench measures: how each is started, when it is ready, how its
processes are named, and where its model counters are read.

- dlpipe: its own redis-server (shared.embedded_redis) plus `dlpipe up` pointed at it, as
  bench/scripts/e2e_throughput.py does (bench/stack.py); counters from the model worker's stats
  hashes (keys.model_stats: batches, items, forward_ms; None where the worker publishes none).
  Its variants (DLPIPE_SYSTEMS) run the same stack with one setting changed: `dlpipe-oldest`
  DLPIPE_MODEL_SCHEDULER=oldest (the policy before the scheduler), `dlpipe-unfused`
  DLPIPE_FUSE_POSTPROCESS=false. On the simulated device (`--device sim`) they run as on a GPU
  box: one model worker owns the device, every core preprocesses.
- baseline, litserve, ray: bench.servers.*, counters from the JSON files their runners write
  (one per process); LitServe's workers and Ray's replicas as `Setup.peer_config` says (tuned).
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench import procs
from bench.peers import PEERS, PeerEnv
from bench.runner import read_all_counters

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
HTTP_SYSTEMS = ("dlpipe", "dlpipe-oldest", "dlpipe-unfused", "baseline", "litserve", "ray", "api")
# dlpipe's variants: what each sets on top of the turn's settings (to compare within one run).
DLPIPE_SYSTEMS: dict[str, dict[str, str]] = {
    "dlpipe": {},
    "dlpipe-oldest": {"DLPIPE_MODEL_SCHEDULER": "oldest"},  # the model worker's policy before the scheduler
    "dlpipe-unfused": {"DLPIPE_FUSE_POSTPROCESS": "false"},  # postprocess stages in the preprocess workers
}


@dataclass
class Turn:
    """One system's servers, started for one turn."""

    system: str
    base_url: str
    servers: list[procs.Server]
    role: Callable[[psutil.Process], str]
    counters: Callable[[str], dict[str, dict[str, float]] | None]  # workload -> per model
    extra_markers: list[str] = field(default_factory=list)  # cmdline marks of strays to stop
    model_workers: int = 1  # processes running forward passes (dlpipe: its model replicas)
    device_log: Path | None = None  # the simulated device's busy log (bench/sim), if it runs on one

    def processes(self) -> list[psutil.Process]:
        return [p for server in self.servers for p in server.tree()]


@dataclass(frozen=True)
class Setup:
    """What every turn needs to know."""

    run_dir: Path  # logs, stats files, Redis data of this run
    workloads: list[str]
    cores: int
    peer_threads: int  # torch threads of the baseline and the peers
    max_batch_size: int  # the peers' batching
    batch_timeout_ms: float
    dlpipe_env: dict[str, str]  # DLPIPE_* given to `dlpipe up` (on top of the environment)
    peers: dict[str, PeerEnv]
    ready_timeout_s: float = 300.0
    api_workers: int = 1  # the API-alone turn's processes (DLPIPE_API_WORKERS)
    device: str = "cpu"  # "sim": the models run on the simulated device (bench/sim)
    pipelines_file: Path | None = None  # the turn's pipelines file (None: dlpipe's bundled one)
    device_log: Path | None = None  # the simulated device's busy log of this turn
    # Per peer, how it runs (bench/tuning.py): workers, threads, max_batch_size, batch_timeout_ms.
    peer_config: dict[str, dict[str, Any]] = field(default_factory=dict)


def start(system: str, setup: Setup, port: int) -> Turn:
    from bench import stack  # noqa: PLC0415 - dlpipe's own turns (it imports this module)

    if not procs.port_is_free(port):
        raise RuntimeError(f"port {port} is in use: not starting {system}")
    if system in DLPIPE_SYSTEMS:
        return stack.start_dlpipe(setup, port, system)
    if system == "api":
        return stack.start_api(setup, port)
    return _start_served(system, setup, port)


def stop(turn: Turn, port: int) -> None:
    for server in reversed(turn.servers):  # dlpipe: the stack first, its Redis last
        procs.stop(server)
    for marker in turn.extra_markers:
        _stop_strays(marker)
    procs.wait_port_free(port)


# -- the bench's own servers ------------------------------------------------------------------


def _start_served(system: str, setup: Setup, port: int) -> Turn:
    stats_dir = setup.run_dir / "stats" / system
    if stats_dir.exists():
        shutil.rmtree(stats_dir)
    stats_dir.mkdir(parents=True)
    config = {
        "workers": 1,
        "threads": setup.peer_threads,
        "max_batch_size": setup.max_batch_size,
        "batch_timeout_ms": setup.batch_timeout_ms,
        **setup.peer_config.get(system, {}),
    }
    args = [
        "--port",
        str(port),
        "--pipelines",
        ",".join(setup.workloads),
        "--threads",
        str(config["threads"]),
        "--stats-dir",
        str(stats_dir),
        "--max-batch-size",
        str(config["max_batch_size"]),
        "--batch-timeout-ms",
        str(config["batch_timeout_ms"]),
        "--workers",
        str(config["workers"]),
    ]
    if setup.pipelines_file is not None:
        args += ["--pipelines-file", str(setup.pipelines_file)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    markers: list[str] = []
    if system == "baseline":
        argv, health = [sys.executable, "-m", "bench.servers.baseline", *args], "/healthz"
    else:
        peer = setup.peers.get(system)
        if peer is None:
            raise RuntimeError(f"{system}: no virtualenv (see the peers section)")
        argv = [str(peer.python), "-m", PEERS[system].module, *args]
        health = "/health" if system == "litserve" else "/healthz"
        markers.append(str(peer.python.parent.parent))
        env.pop("VIRTUAL_ENV", None)
        if system == "ray":
            env.update(
                {
                    "BENCH_RAY_MAX_BATCH": str(config["max_batch_size"]),
                    "BENCH_RAY_BATCH_WAIT_S": str(config["batch_timeout_ms"] / 1000.0),
                    "RAY_USAGE_STATS_ENABLED": "0",
                    "RAY_DISABLE_DOCKER_CPU_WARNING": "1",
                }
            )
    work_dir = setup.run_dir / "cwd" / system  # LitServe and Ray write files where they run
    work_dir.mkdir(parents=True, exist_ok=True)
    server = procs.start(
        system, argv, env=env, cwd=work_dir, log_path=setup.run_dir / "logs" / f"{system}.log"
    )
    base_url = f"http://127.0.0.1:{port}"

    def counters(workload: str) -> dict[str, dict[str, float]] | None:
        return read_all_counters(stats_dir, workload) or None

    workers = 1 if system == "baseline" else int(config["workers"])
    turn = Turn(system, base_url, [server], procs.default_role, counters, markers, workers, setup.device_log)
    try:
        procs.wait_until(server, lambda: procs.http_ok(base_url + health, timeout_s=5), setup.ready_timeout_s)
    except Exception:
        stop(turn, port)
        raise
    return turn


def _stop_strays(marker: str) -> None:
    """Processes left behind whose command line names `marker` (a peer's venv): by pid."""
    strays = []
    for p in psutil.process_iter(["pid", "cmdline", "exe"]):
        try:
            text = " ".join(p.info["cmdline"] or []) + " " + (p.info["exe"] or "")
        except psutil.Error:
            continue
        if marker in text and p.pid != os.getpid():
            strays.append(p)
    if strays:
        log.warning(
            "stopping %d processes left behind under %s: %s", len(strays), marker, [p.pid for p in strays]
        )
        for p in strays:
            try:
                p.terminate()
            except psutil.Error:
                pass
        _, alive = psutil.wait_procs(strays, timeout=10)
        for p in alive:
            try:
                p.kill()
            except psutil.Error:
                pass


def describe(turn: Turn) -> dict[str, Any]:
    return {"base_url": turn.base_url, "pids": {s.name: s.proc.pid for s in turn.servers}}
