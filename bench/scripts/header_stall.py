"""How long one client sending a giant request header stalls the API's event loop for everyone
else: `/healthz` latency on another connection while the header is sent.

    .venv/bin/python bench/scripts/header_stall.py --header-mb 60

Starts its own redis-server and `dlpipe api` (loopback, free ports). One thread sends
`GET / HTTP/1.1` and a single `X-Big:` header of `header_mb` MB as fast as the API takes it
(then the blank line), and reads what comes back; meanwhile another thread asks `/healthz`
over one keep-alive connection, again and again. Prints one JSON document: the healthz
latencies during the send (median, max), the big client's answer (its status line, or the
error it got) and how long its send lasted.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from shared.embedded_redis import free_port, start_redis  # noqa: E402


def start_api(port: int, redis_port: int, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DLPIPE_")}
    env.update(
        DLPIPE_REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
        DLPIPE_PORT=str(port),
        DLPIPE_LOG_LEVEL="WARNING",
        PYTHONPATH=str(REPO),
    )
    return subprocess.Popen(
        [sys.executable, "-m", "services.cli", "api"],
        cwd=REPO,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def healthz(sock: socket.socket) -> None:
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data or not data.endswith(b"}"):
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        data += chunk


def wait_up(port: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("the API exited")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                healthz(sock)
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("the API did not answer")


def send_big(port: int, header_mb: int, result: dict[str, Any]) -> None:
    chunk = b"a" * (1 << 20)
    started = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ")
            for _ in range(header_mb):
                sock.sendall(chunk)
            sock.sendall(b"\r\n\r\n")
            result["sent_s"] = round(time.monotonic() - started, 3)
            answer = sock.recv(65536)
            result["answer"] = answer.split(b"\r\n", 1)[0].decode() or "closed, no answer"
    except OSError as exc:
        result["sent_s"] = round(time.monotonic() - started, 3)
        result["answer"] = f"{type(exc).__name__}: {exc}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--header-mb", type=int, default=60)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        redis_proc, redis_port = start_redis(Path(tmp) / "redis")
        port = free_port()
        api = start_api(port, redis_port, Path(tmp) / "api.log")
        try:
            wait_up(port, api)
            big: dict[str, Any] = {}
            sender = threading.Thread(target=send_big, args=(port, args.header_mb, big))
            latencies: list[float] = []
            with socket.create_connection(("127.0.0.1", port), timeout=30) as probe:
                healthz(probe)
                sender.start()
                while sender.is_alive():
                    asked = time.monotonic()
                    healthz(probe)
                    latencies.append(time.monotonic() - asked)
            sender.join()
        finally:
            api.terminate()
            api.wait(30)
            redis_proc.terminate()
            redis_proc.wait(10)
    print(
        json.dumps(
            {
                "header_mb": args.header_mb,
                "healthz_during_send": {
                    "n": len(latencies),
                    "median_ms": round(statistics.median(latencies) * 1000, 2) if latencies else None,
                    "max_ms": round(max(latencies) * 1000, 1) if latencies else None,
                },
                "big_client": big,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
