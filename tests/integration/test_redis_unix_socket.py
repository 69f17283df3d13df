"""DLPIPE_REDIS_URL=unix:///path/redis.sock: every process talks to Redis over a unix socket."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import redis

from shared.embedded_redis import find_redis_server, free_port, redis_command, wait_for_redis
from shared.settings import Settings
from workers import runtime


@pytest.fixture
def unix_url(tmp_path: Path) -> str:
    sock = tmp_path / "redis.sock"
    port = free_port()
    proc = subprocess.Popen(
        redis_command(find_redis_server(), port, tmp_path)
        + ["--unixsocket", str(sock), "--unixsocketperm", "700"]
    )
    try:
        wait_for_redis(f"redis://127.0.0.1:{port}/0", 10, proc)
        yield f"unix://{sock}?db=0"
    finally:
        proc.terminate()
        proc.wait(10)


def test_the_workers_client_speaks_over_a_unix_socket(unix_url: str) -> None:
    client = runtime.redis_client(Settings(redis_url=unix_url))
    assert client.ping() is True
    assert isinstance(client.connection_pool.get_connection(), redis.UnixDomainSocketConnection)
    client.set("k", "v")
    assert client.get("k") == b"v"
