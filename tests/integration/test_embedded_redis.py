"""`dlpipe up`'s embedded Redis dies (SIGKILL): the supervisor says so loudly and starts it
again on the same port with the same data folder, so what it had comes back from its AOF and
the same URL answers; the other children are left alone. (With the real stack and jobs in
flight: tests/e2e/test_redis_restart.py.)"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import redis

from shared.embedded_redis import free_port
from tests.support.upprocess import LOOP, UpProcess, pid_gone
from tests.support.waiting import wait_until


def test_a_killed_embedded_redis_comes_back_on_its_port_with_its_data(
    tmp_path: Path,
    ups: list[UpProcess],
) -> None:
    up = UpProcess(tmp_path, free_port(), {"loop": LOOP})
    ups.append(up)
    up.wait_started()
    url = up.redis_url()
    assert url
    before = up.pids()
    client = redis.Redis.from_url(url, socket_timeout=2)
    client.set("dlpipe:test:before-the-kill", "kept")  # answered: written to the AOF (fsync or not)
    os.kill(before["redis"], signal.SIGKILL)

    def back() -> bool:
        restarted = re.findall(r"started redis pid=(\d+)", up.log())
        try:
            return len(restarted) == 2 and client.get("dlpipe:test:before-the-kill") == b"kept"
        except redis.ConnectionError:
            return False

    wait_until(back, 30, "the embedded Redis back on the same URL, with its data")
    after = up.pids()
    assert after["redis"] != before["redis"] and after["loop"] == before["loop"]
    log = up.log()
    assert re.search(r"redis \(pid \d+\) exited unexpectedly, killed by SIGKILL", log), log
    died = rf"ERROR up\[\d+\] services\.embedded: EMBEDDED REDIS DIED \(redis-server pid {before['redis']}\)"
    assert re.search(died, log), log
    assert f"EMBEDDED REDIS RESTARTED: redis-server pid={after['redis']} on {url} (restart 1)" in log, log
    assert "loop (pid" not in log  # nothing else was restarted
    client.close()
    assert up.terminate() == 0
    wait_until(lambda: pid_gone(after["redis"]), 10, "the new redis-server to be stopped")
