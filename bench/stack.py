"""dlpipe's own turns (bench/systems.py starts them): `dlpipe up` with a redis-server of its own,
as `dlpipe` or one of its variants (systems.DLPIPE_SYSTEMS: the old scheduler, no fusion); and
`dlpipe api` alone on the no-op pipeline (the `api` turn). Counters come from the model worker's
stats hashes (keys.model_stats)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import psutil

from bench import procs
from bench.systems import DLPIPE_SYSTEMS, REPO, Setup, Turn, stop


def dlpipe_role(p: psutil.Process) -> str:
    try:
        cmd = " ".join(p.cmdline())
        name = p.name()
    except psutil.Error:
        return "?"
    if "redis-server" in name or "redis-server" in cmd:
        return "redis"
    for role, mark in (
        ("preprocess", "preprocess"),
        ("model", "worker model"),
        ("model", "model_main"),
        ("notifier", "notifier"),
        ("api", " api"),
    ):
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
    return procs.Server(
        "redis", redis_proc, data / "redis" / "redis.log"
    ), f"redis://127.0.0.1:{redis_port}/0"


def _dlpipe_argv(command: str) -> list[str]:
    dlpipe = Path(sys.executable).with_name("dlpipe")
    return [str(dlpipe), command] if dlpipe.exists() else [sys.executable, "-m", "services.cli", command]


def dlpipe_env(setup: Setup, system: str = "dlpipe") -> dict[str, str]:
    """The DLPIPE_* settings a dlpipe turn gives `dlpipe up` (on top of this environment)."""
    env = {"DLPIPE_LOG_LEVEL": "WARNING"}
    if setup.device == "sim":  # as on a GPU box: one model worker owns the device (its threads idle)
        env.update(
            {
                "DLPIPE_MODEL_REPLICAS": "1",
                "DLPIPE_TORCH_THREADS": "1",
                "DLPIPE_PREPROCESS_CONCURRENCY": str(setup.cores),
            }
        )
    env.update(setup.dlpipe_env)
    if setup.pipelines_file is not None:
        env["DLPIPE_PIPELINES_FILE"] = str(setup.pipelines_file)
    env.update(DLPIPE_SYSTEMS[system])
    return env


def settings_summary(setup: Setup) -> dict[str, object]:
    """What `dlpipe up` runs with on the simulated device (dlpipe_env), for the run's record."""
    env = dlpipe_env(setup)
    return {
        "torch_threads": int(env["DLPIPE_TORCH_THREADS"]),
        "model_replicas": int(env["DLPIPE_MODEL_REPLICAS"]),
        "preprocess_concurrency": int(env["DLPIPE_PREPROCESS_CONCURRENCY"]),
        "pipelines_file": "per turn (bench/sim)",
    }


def start_dlpipe(setup: Setup, port: int, system: str) -> Turn:
    import redis  # noqa: PLC0415

    from shared import keys  # noqa: PLC0415

    data = setup.run_dir / system
    settings = dlpipe_env(setup, system)
    redis_server, stack, redis_url = _start_on_redis(
        setup, port, system, "up", data, {**settings, "DLPIPE_DATA_DIR": str(data)}
    )
    client = redis.Redis.from_url(redis_url)
    models = _dlpipe_models(setup.workloads, setup.pipelines_file)

    def counters(workload: str) -> dict[str, dict[str, float]] | None:
        out = {}
        for model in models.get(workload, []):
            fields = client.hgetall(keys.model_stats(model))
            if fields:
                out[model] = {k.decode() if isinstance(k, bytes) else k: float(v) for k, v in fields.items()}
        return out or None

    turn = Turn(
        system,
        f"http://127.0.0.1:{port}",
        [redis_server, stack],
        dlpipe_role,
        counters,
        model_workers=_dlpipe_model_replicas(settings),
        device_log=setup.device_log,
    )
    return _when_ready(turn, stack, "/readyz", setup, port)


def _api_role(p: psutil.Process) -> str:
    """The API-alone turn's processes: its Redis, else the API (uvicorn's worker processes too)."""
    return "redis" if dlpipe_role(p) == "redis" else "api"


def start_api(setup: Setup, port: int) -> Turn:
    """`dlpipe api` alone on the no-op pipeline (bench/noop.py), with its own Redis: the API's
    own cost of taking a job. The backlog cap is lifted (no worker drains it)."""
    from bench.noop import PIPELINES_FILE  # noqa: PLC0415

    settings = {
        "DLPIPE_LOG_LEVEL": "WARNING",
        **setup.dlpipe_env,
        "DLPIPE_PIPELINES_FILE": str(PIPELINES_FILE),
        "DLPIPE_MAX_BACKLOG": str(10**12),
        "DLPIPE_API_WORKERS": str(setup.api_workers),
    }
    redis_server, api, _ = _start_on_redis(setup, port, "api", "api", setup.run_dir / "api", settings)
    turn = Turn("api", f"http://127.0.0.1:{port}", [redis_server, api], _api_role, lambda workload: None)
    return _when_ready(turn, api, "/healthz", setup, port)


def _start_on_redis(
    setup: Setup, port: int, name: str, command: str, data: Path, settings: dict[str, str]
) -> tuple[procs.Server, procs.Server, str]:
    """A fresh redis-server in `data`, then `dlpipe COMMAND` on it, on `port`, with `settings`
    over this environment: (the Redis server, the dlpipe one, the Redis URL). Redis is stopped
    again if dlpipe does not start."""
    redis_server, redis_url = _start_redis(data)
    env = {
        **os.environ,
        **settings,
        "DLPIPE_REDIS_URL": redis_url,
        "DLPIPE_PORT": str(port),
        "DLPIPE_HOST": "127.0.0.1",
    }
    try:
        server = procs.start(
            name, _dlpipe_argv(command), env=env, cwd=REPO, log_path=setup.run_dir / "logs" / f"{name}.log"
        )
    except Exception:
        procs.stop(redis_server)
        raise
    return redis_server, server, redis_url


def _when_ready(turn: Turn, server: procs.Server, path: str, setup: Setup, port: int) -> Turn:
    """The turn once `path` answers 200; its servers stopped if it never does (or `server` exits)."""
    try:
        procs.wait_until(
            server, lambda: procs.http_ok(f"{turn.base_url}{path}", timeout_s=5), setup.ready_timeout_s
        )
    except Exception:
        stop(turn, port)
        raise
    return turn


def _dlpipe_model_replicas(dlpipe_settings: dict[str, str]) -> int:
    """DLPIPE_MODEL_REPLICAS as `dlpipe up` will see it (this environment plus the turn's)."""
    from shared.settings import Settings  # noqa: PLC0415

    env = {k[len("DLPIPE_") :].lower(): v for k, v in dlpipe_settings.items() if k.startswith("DLPIPE_")}
    return Settings(**{k: v for k, v in env.items() if k in Settings.model_fields}).model_replicas


def _dlpipe_models(workloads: list[str], pipelines_file: Path | None = None) -> dict[str, list[str]]:
    """The models each workload's pipeline uses, from the pipelines file dlpipe will load."""
    from shared.pipeline_spec import load_pipelines  # noqa: PLC0415
    from shared.settings import Settings  # noqa: PLC0415

    config = load_pipelines(pipelines_file or Settings().pipelines_file)
    return {name: sorted({s.model for s in config.pipelines[name].stages if s.model}) for name in workloads}
