"""The HTTP systems the bench measures: how each is started, when it is ready, how its
processes are named, and where its model counters are read.

- dlpipe: its own redis-server (shared.embedded_redis) plus `dlpipe up` pointed at it, as
  benchmarks/e2e_throughput.py does; counters from the model worker's stats hashes
  (keys.model_stats: batches, items, forward_ms; None where the worker publishes none).
- baseline, litserve, ray: bench.servers.*, counters from the JSON file their runner writes.
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
from bench.runner import read_counters

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
HTTP_SYSTEMS = ("dlpipe", "baseline", "litserve", "ray", "api")


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


def start(system: str, setup: Setup, port: int) -> Turn:
    if not procs.port_is_free(port):
        raise RuntimeError(f"port {port} is in use: not starting {system}")
    if system == "dlpipe":
        return _start_dlpipe(setup, port)
    if system == "api":
        return _start_api(setup, port)
    return _start_served(system, setup, port)


def stop(turn: Turn, port: int) -> None:
    for server in reversed(turn.servers):  # dlpipe: the stack first, its Redis last
        procs.stop(server)
    for marker in turn.extra_markers:
        _stop_strays(marker)
    procs.wait_port_free(port)


# -- dlpipe -------------------------------------------------------------------------------


def dlpipe_role(p: psutil.Process) -> str:
    try:
        cmd = " ".join(p.cmdline())
        name = p.name()
    except psutil.Error:
        return "?"
    if "redis-server" in name or "redis-server" in cmd:
        return "redis"
    for role, mark in (("preprocess", "preprocess"), ("model", "worker model"), ("model", "model_main"),
                       ("notifier", "notifier"), ("api", " api")):  # fmt: skip
        if mark in cmd:
            return role
    if " up" in cmd:
        return "supervisor"
    return name


def _start_redis(data: Path) -> tuple[procs.Server, str]:
    """A fresh redis-server of the turn's own (shared.embedded_redis), data in `data`/redis."""
    from shared.embedded_redis import start_redis  # noqa: PLC0415

    if data.exists():
        shutil.rmtree(data)
    redis_proc, redis_port = start_redis(data / "redis")
    return procs.Server("redis", redis_proc, data / "redis" / "redis.log"), f"redis://127.0.0.1:{redis_port}/0"


def _dlpipe_argv(command: str) -> list[str]:
    dlpipe = Path(sys.executable).with_name("dlpipe")
    return [str(dlpipe), command] if dlpipe.exists() else [sys.executable, "-m", "services.cli", command]


def _start_dlpipe(setup: Setup, port: int) -> Turn:
    import redis  # noqa: PLC0415

    from shared import keys  # noqa: PLC0415

    data = setup.run_dir / "dlpipe"
    redis_server, redis_url = _start_redis(data)
    env = {**os.environ, "DLPIPE_LOG_LEVEL": "WARNING", **setup.dlpipe_env, "DLPIPE_REDIS_URL": redis_url,
           "DLPIPE_PORT": str(port), "DLPIPE_HOST": "127.0.0.1", "DLPIPE_DATA_DIR": str(data)}  # fmt: skip
    try:
        stack = procs.start("dlpipe", _dlpipe_argv("up"), env=env, cwd=REPO,
                            log_path=setup.run_dir / "logs" / "dlpipe.log")  # fmt: skip
    except Exception:
        procs.stop(redis_server)
        raise
    base_url = f"http://127.0.0.1:{port}"
    client = redis.Redis.from_url(redis_url)
    models = _dlpipe_models(setup.workloads)

    def counters(workload: str) -> dict[str, dict[str, float]] | None:
        out = {}
        for model in models.get(workload, []):
            fields = client.hgetall(keys.model_stats(model))
            if fields:
                out[model] = {k.decode() if isinstance(k, bytes) else k: float(v) for k, v in fields.items()}
        return out or None

    turn = Turn("dlpipe", base_url, [redis_server, stack], dlpipe_role, counters,
                model_workers=_dlpipe_model_replicas(setup))  # fmt: skip
    try:
        procs.wait_until(
            stack, lambda: procs.http_ok(f"{base_url}/readyz", timeout_s=5), setup.ready_timeout_s
        )
    except Exception:
        stop(turn, port)
        raise
    return turn


def _api_role(p: psutil.Process) -> str:
    """The API-alone turn's processes: its Redis, else the API (uvicorn's worker processes too)."""
    return "redis" if dlpipe_role(p) == "redis" else "api"


def _start_api(setup: Setup, port: int) -> Turn:
    """`dlpipe api` alone on the no-op pipeline (bench/noop.py), with its own Redis: the API's
    own cost of taking a job. The backlog cap is lifted (no worker drains it)."""
    from bench.noop import PIPELINES_FILE  # noqa: PLC0415

    data = setup.run_dir / "api"
    redis_server, redis_url = _start_redis(data)
    env = {**os.environ, "DLPIPE_LOG_LEVEL": "WARNING", **setup.dlpipe_env, "DLPIPE_REDIS_URL": redis_url,
           "DLPIPE_PORT": str(port), "DLPIPE_HOST": "127.0.0.1", "DLPIPE_PIPELINES_FILE": str(PIPELINES_FILE),
           "DLPIPE_MAX_BACKLOG": str(10**12), "DLPIPE_API_WORKERS": str(setup.api_workers)}  # fmt: skip
    try:
        api = procs.start("api", _dlpipe_argv("api"), env=env, cwd=REPO, log_path=setup.run_dir / "logs" / "api.log")
    except Exception:
        procs.stop(redis_server)
        raise
    base_url = f"http://127.0.0.1:{port}"
    turn = Turn("api", base_url, [redis_server, api], _api_role, lambda workload: None)
    try:
        procs.wait_until(api, lambda: procs.http_ok(f"{base_url}/healthz", timeout_s=5), setup.ready_timeout_s)
    except Exception:
        stop(turn, port)
        raise
    return turn


def _dlpipe_model_replicas(setup: Setup) -> int:
    """DLPIPE_MODEL_REPLICAS as `dlpipe up` will see it (this environment plus --dlpipe-env)."""
    from shared.settings import Settings  # noqa: PLC0415

    env = {k[len("DLPIPE_"):].lower(): v for k, v in setup.dlpipe_env.items() if k.startswith("DLPIPE_")}
    return Settings(**{k: v for k, v in env.items() if k in Settings.model_fields}).model_replicas


def _dlpipe_models(workloads: list[str]) -> dict[str, list[str]]:
    """The models each workload's pipeline uses, from the pipelines file dlpipe will load."""
    from shared.pipeline_spec import load_pipelines  # noqa: PLC0415
    from shared.settings import Settings  # noqa: PLC0415

    config = load_pipelines(Settings().pipelines_file)
    return {name: sorted({s.model for s in config.pipelines[name].stages if s.model}) for name in workloads}


# -- the bench's own servers ------------------------------------------------------------------


def _start_served(system: str, setup: Setup, port: int) -> Turn:
    stats_dir = setup.run_dir / "stats" / system
    if stats_dir.exists():
        shutil.rmtree(stats_dir)
    stats_dir.mkdir(parents=True)
    args = ["--port", str(port), "--pipelines", ",".join(setup.workloads), "--threads", str(setup.peer_threads),
            "--stats-dir", str(stats_dir), "--max-batch-size", str(setup.max_batch_size),
            "--batch-timeout-ms", str(setup.batch_timeout_ms)]  # fmt: skip
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
            env.update({"BENCH_RAY_MAX_BATCH": str(setup.max_batch_size),
                        "BENCH_RAY_BATCH_WAIT_S": str(setup.batch_timeout_ms / 1000.0),
                        "RAY_USAGE_STATS_ENABLED": "0", "RAY_DISABLE_DOCKER_CPU_WARNING": "1"})  # fmt: skip
    work_dir = setup.run_dir / "cwd" / system  # LitServe and Ray write files where they run
    work_dir.mkdir(parents=True, exist_ok=True)
    server = procs.start(
        system, argv, env=env, cwd=work_dir, log_path=setup.run_dir / "logs" / f"{system}.log"
    )
    base_url = f"http://127.0.0.1:{port}"

    def counters(workload: str) -> dict[str, dict[str, float]] | None:
        return read_counters(stats_dir / f"{workload}.json") or None

    turn = Turn(system, base_url, [server], procs.default_role, counters, markers)
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
        log.warning("stopping %d processes left behind under %s: %s", len(strays), marker,
                    [p.pid for p in strays])  # fmt: skip
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
