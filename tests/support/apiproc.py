"""A real `dlpipe api` process for a test: on a free port, on the test's Redis, its log kept."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from shared.embedded_redis import free_port
from tests.conftest import REPO
from tests.support.waiting import wait_until


@dataclass(frozen=True)
class ApiProcess:
    proc: subprocess.Popen[bytes]
    url: str  # http://127.0.0.1:<port>
    port: int
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def connect(self) -> socket.socket:
        """A raw TCP connection to the API, for requests no well-behaved client sends."""
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)


@contextlib.contextmanager
def api_process(folder: Path, redis_url: str, **settings: str) -> Iterator[ApiProcess]:
    """`dlpipe api` with these DLPIPE_* settings (keyword `max_backlog="3"` is DLPIPE_MAX_BACKLOG),
    no other DLPIPE_* variable from the test's environment; stopped (SIGTERM) on leaving."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DLPIPE_")}
    env.update({f"DLPIPE_{name.upper()}": value for name, value in settings.items()})
    env.update(DLPIPE_REDIS_URL=redis_url, DLPIPE_PORT=str(port), PYTHONPATH=str(REPO))
    log = folder / f"api-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "api"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    api = ApiProcess(proc, f"http://127.0.0.1:{port}", port, log)

    def up() -> bool:
        assert proc.poll() is None, api.log_text()
        try:
            return httpx.get(f"{api.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(up, 60, "the API to answer")
        yield api
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
