"""The embedded Redis of `dlpipe up` (when no DLPIPE_REDIS_URL is set): a redis-server child
on a free loopback port, AOF on, `maxmemory` (DLPIPE_REDIS_MAXMEMORY) with noeviction, its data
in a folder that one `dlpipe up` at a time may use.

If it dies it is restarted like any child (backoff: 1 s doubling to 30 s), with the same
command line: the same port, so the API and the workers reconnect by themselves, and the same
folder, so it replays its AOF (the jobs, results, streams and consumer groups it had). Its
death and its return are logged as errors: the stack serves nothing while it is away.
"""

from __future__ import annotations

import fcntl
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from shared.children import Child, Supervisor
from shared.embedded_redis import find_redis_server, free_port, redis_command, wait_for_redis

log = logging.getLogger(__name__)

REDIS_GRACE_S = 10.0  # how long the embedded Redis gets to flush its AOF and exit


@dataclass
class EmbeddedRedis:
    """The embedded redis-server under its own Supervisor, which restarts it when it dies."""

    sup: Supervisor
    url: str
    data_dir: Path

    @property
    def pid(self) -> int | None:
        return self.sup.children[0].pid

    def run_once(self) -> None:
        """One supervision step: reap it if it died, restart it once its backoff is over; say so loudly."""
        child = self.sup.children[0]
        pid, restarts = child.pid, child.restarts
        self.sup.run_once()
        if child.restarts > restarts:
            log.error(
                "EMBEDDED REDIS DIED (redis-server pid %s): the API answers 503 and the workers wait; "
                "restarting it on %s with its AOF in %s",
                pid,
                self.url,
                self.data_dir,
            )
        elif child.pid is not None and child.pid != pid:
            log.error(
                "EMBEDDED REDIS RESTARTED: redis-server pid=%d on %s (restart %d), replaying its AOF",
                child.pid,
                self.url,
                child.restarts,
            )


def lock_data_dir(path: Path) -> IO[bytes]:
    """Hold a lock on the embedded Redis's folder, so two `dlpipe up` never share one."""
    path.mkdir(parents=True, exist_ok=True)
    handle = open(path / "dlpipe-up.lock", "wb")  # noqa: SIM115 - held until `up` returns
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise SystemExit(f"dlpipe up: another `dlpipe up` is using {path}") from None
    return handle


def start_embedded_redis(
    data_dir: Path, supervisor_kwargs: dict, appendfsync: str = "everysec", maxmemory: str = ""
) -> EmbeddedRedis:
    """Start redis-server on a free loopback port with its data in `data_dir`; wait for PING.
    `appendfsync`: everysec or always (settings.redis_appendfsync); `maxmemory`: a Redis size,
    "" or "0" none (settings.redis_maxmemory), with noeviction always."""
    binary = find_redis_server()
    last_error: Exception | None = None
    for _ in range(3):  # a free port can be taken between choosing and binding it
        port = free_port()
        child = Child("redis", redis_command(binary, port, data_dir.resolve(), appendfsync, maxmemory))
        redis_sup = Supervisor([child], **supervisor_kwargs)
        redis_sup.start()
        url = f"redis://127.0.0.1:{port}/0"
        try:
            wait_for_redis(url, timeout_s=15.0, proc=child.proc)
        except (RuntimeError, TimeoutError) as exc:
            last_error = exc
            redis_sup.stop(REDIS_GRACE_S)
            continue
        return EmbeddedRedis(redis_sup, url, data_dir.resolve())
    raise SystemExit(
        f"dlpipe up: embedded redis-server did not start ({last_error}); see {data_dir}/redis.log"
    )
