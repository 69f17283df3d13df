"""The whole stack as a user runs it: `dlpipe up` (embedded Redis, API, every worker) as processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from shared.embedded_redis import free_port
from tests.support.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Stack:
    base_url: str
    proc: subprocess.Popen
    log_path: Path
    data_root: Path | None = None  # DLPIPE_DATA_ROOT: where `path` inputs may point

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def dlpipe_command() -> list[str]:
    script = Path(sys.executable).with_name("dlpipe")
    return [str(script)] if script.exists() else [sys.executable, "-m", "services.cli"]


def start_stack(tmp: Path, extra_env: dict[str, str] | None = None, cwd: Path = REPO) -> Stack:
    """`dlpipe up` on a free port, data under `tmp`, run from `cwd` (what relative paths in a
    pipelines file are relative to); ready when /readyz says so."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DLPIPE_")}
    env.update(
        {
            "DLPIPE_PORT": str(port),
            "DLPIPE_DATA_DIR": str(tmp / "data"),
            "DLPIPE_HEARTBEAT_INTERVAL_MS": "500",
            "DLPIPE_WORKER_TTL_MS": "3000",
            "DLPIPE_READ_BLOCK_MS": "200",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra_env or {})
    log_path = tmp / "stack.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [*dlpipe_command(), "up"],
            cwd=cwd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    root = env.get("DLPIPE_DATA_ROOT")
    stack = Stack(
        base_url=f"http://127.0.0.1:{port}",
        proc=proc,
        log_path=log_path,
        data_root=Path(root) if root else None,
    )

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"dlpipe up exited with {proc.returncode}:\n{stack.log()[-4000:]}")
        return httpx.get(f"{stack.base_url}/readyz", timeout=2).status_code == 200

    try:
        wait_until(ready, timeout_s=120, what="the stack to be ready", interval_s=0.2)
    except BaseException:
        stop_stack(stack)
        raise
    return stack


def stop_stack(stack: Stack, timeout_s: float = 60) -> int:
    if stack.proc.poll() is None:
        stack.proc.send_signal(signal.SIGTERM)
    try:
        return stack.proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(stack.proc.pid, signal.SIGKILL)
        stack.proc.wait()
        raise


@pytest.fixture(scope="package")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("stack")
    data_root = tmp / "inputs"
    data_root.mkdir()
    # `path` inputs under <tmp>/inputs; `image_url` may reach the tests' servers on 127.0.0.1.
    extra = {
        "DLPIPE_WEBHOOK_ALLOW_PRIVATE": "true",  # the tests' receivers listen on 127.0.0.1
        "DLPIPE_DATA_ROOT": str(data_root),
        "DLPIPE_FETCH_ALLOW_PRIVATE": "true",
    }
    running = start_stack(tmp, extra)
    try:
        yield running
    finally:
        stop_stack(running)


@pytest.fixture
def client(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.base_url, timeout=30) as c:
        yield c
