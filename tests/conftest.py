"""Shared fixtures: real redis-server processes on free ports, started and owned by the tests.

Never point a test at a Redis it did not start (the machine may run one on 6379).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from shared.embedded_redis import free_port, redis_command, start_redis, wait_for_redis

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio only (the API's loop; uvloop in production), whatever other
    backends are installed (selenium brings trio)."""
    return "asyncio"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One redis-server for the session; yields its URL."""
    proc, port = start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def redis_url(redis_server: str) -> Iterator[str]:
    """The session's redis-server, emptied for this test (it is ours: the tests started it)."""
    client = redis.Redis.from_url(redis_server)
    client.flushall()
    client.close()
    yield redis_server


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture(params=["bundled", "system"])
def any_redis(request: pytest.FixtureRequest, redis_url: str, tmp_path: Path) -> Iterator[redis.Redis]:
    """Each test twice: on the session's redis-server (the bundled 6.2: no `lag` in XINFO GROUPS)
    and on the machine's own redis-server binary (7.x) started on a port of ours (skipped when
    there is none)."""
    if request.param == "bundled":
        client = redis.Redis.from_url(redis_url)
        yield client
        client.close()
        return
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("no redis-server on PATH (the bundled one is tested)")
    port = free_port()
    server = subprocess.Popen(redis_command(binary, port, tmp_path), stdout=subprocess.DEVNULL)
    try:
        wait_for_redis(f"redis://127.0.0.1:{port}/0", timeout_s=10, proc=server)
        client = redis.Redis(port=port)
        yield client
        client.close()
    finally:
        server.kill()
        server.wait(timeout=10)
