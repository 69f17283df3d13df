"""dlpipe on two test hosts (tests/support/netns.py): Redis and the API on host A, every worker on host B.

Used by tests/e2e/test_two_hosts.py and bench/scripts/two_hosts.py. Host A runs redis-server (bound
to its veth address and loopback, with a password) and `dlpipe api` (on its veth address); host B
runs `dlpipe worker preprocess`, `dlpipe worker model` and `dlpipe worker notifier`, pointed at
host A's Redis by address. Each process gets its own working folder and DLPIPE_DATA_DIR, so
nothing passes between them through a file: only the pipelines file (and the code) is on both,
as on real hosts. The light `sums` pipeline of tests/failover.py (text -> SumModel) needs no weights.

`workers_on=a` puts the workers on host A too, on Redis's loopback address: the same processes,
one host, for the benchmark's comparison.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from shared.embedded_redis import find_redis_server, redis_command
from tests.failover import PIPELINE, pipelines_file
from tests.support.netns import Host

REPO = Path(__file__).resolve().parents[2]
REDIS_PORT = 16379  # in host A's own namespace: nothing else listens there
API_PORT = 18000
WEBHOOK_SECRET = "whsec_" + "dGVzdC1zZWNyZXQtb2YtdHdvLWhvc3RzLTMyYnl0ZXM="  # 32 bytes, tests only
WORKER_KINDS = ("preprocess", "model", "notifier")

__all__ = ["API_PORT", "PIPELINE", "WEBHOOK_SECRET", "Split", "split_stack"]


@dataclass
class Split:
    a: Host
    b: Host
    workers_on: Host
    api_url: str  # http://<host A>:<port>: reach it from inside host A (a.entered())
    redis_url: str  # as host A sees it (with the password)
    logs: Path

    def log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def all_logs(self, tail: int = 3000) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-tail:]}" for p in sorted(self.logs.glob("*.log"))
        )


def _env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DLPIPE_")}
    env.update({f"DLPIPE_{k.upper()}": v for k, v in settings.items()})
    env.update(PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    return env


@contextmanager
def split_stack(a: Host, b: Host, tmp: Path, workers_on: Host | None = None, **extra: str) -> Iterator[Split]:
    """Start everything (see the module docstring) and wait until the API on A is ready; stopped
    with the hosts (two_hosts() kills what it started). `extra`: more DLPIPE_* settings for all."""
    workers_on = workers_on or b
    logs = tmp / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    password = secrets.token_hex(16)
    redis_dir = tmp / "host-a" / "redis"
    redis_dir.mkdir(parents=True)
    argv = redis_command(find_redis_server(), REDIS_PORT, redis_dir)
    argv += ["--bind", a.addr, "127.0.0.1", "--requirepass", password, "--logfile", ""]
    redis_proc = a.popen(argv, log=logs / "redis.log", cwd=redis_dir)
    common = {
        "pipelines_file": str(pipelines_file(tmp / "pipelines.yaml")),
        "heartbeat_interval_ms": "500",
        "worker_ttl_ms": "3000",
        "read_block_ms": "200",
        "lease_ms": "3000",
        "torch_threads": "1",
        "max_backlog": "100000",
        **extra,
    }
    local_url = f"redis://:{password}@127.0.0.1:{REDIS_PORT}/0"
    remote_url = f"redis://:{password}@{a.addr}:{REDIS_PORT}/0"
    workers_url = local_url if workers_on is a else remote_url
    split = Split(a, b, workers_on, f"http://{a.addr}:{API_PORT}", local_url, logs)

    def start(where: Host, name: str, args: list[str], **settings: str) -> subprocess.Popen[bytes]:
        home = tmp / f"host-{'a' if where is a else 'b'}" / name
        home.mkdir(parents=True, exist_ok=True)
        env = _env(**common, data_dir=str(home / "data"), **settings)
        argv = [sys.executable, "-m", "services.cli", *args]
        return where.popen(argv, log=logs / f"{name}.log", env=env, cwd=home)

    procs = {"redis": redis_proc}
    # the API checks a webhook URL at submit too: this test's receiver is on a test host
    procs["api"] = start(
        a, "api", ["api"], redis_url=local_url, host=a.addr, port=str(API_PORT), webhook_allow_private="true"
    )
    for kind in WORKER_KINDS:
        settings = {"redis_url": workers_url}
        if kind == "notifier":  # only this test's receiver, on a test host, is ever a webhook's target
            settings.update(webhook_secret=WEBHOOK_SECRET, webhook_allow_private="true")
        if kind == "preprocess":
            settings.update(preprocess_concurrency="1")
        if kind == "model":
            settings.update(model_replicas="1")
        procs[kind] = start(workers_on, kind, ["worker", kind], **settings)

    def ready() -> bool:
        with a.entered():
            try:
                return httpx.get(f"{split.api_url}/readyz", timeout=2, trust_env=False).status_code == 200
            except httpx.HTTPError:
                return False

    deadline = time.monotonic() + 90
    while not ready():
        dead = [name for name, proc in procs.items() if proc.poll() is not None]
        if dead:
            raise RuntimeError(f"{', '.join(dead)} exited:\n{split.all_logs()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"the API on host A never saw every worker:\n{split.all_logs()}")
        time.sleep(0.2)  # a poll's interval, as tests/support/waiting.py's
    yield split
