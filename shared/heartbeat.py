"""Worker heartbeats: how workers announce what they serve, and how /readyz reads it.

A worker writes, every `heartbeat_interval_ms`, in one script (shared/redis/lua/heartbeat.lua):
  ZADD  keys.WORKERS {worker_id: now_ms}
  HSET  keys.worker(worker_id) kind=<preprocess|model|notifier> streams=<comma-joined stream names>
        pid=<pid> host=<hostname>
  PEXPIRE keys.worker(worker_id) <worker_ttl_ms>
A worker is live while its score is within `worker_ttl_ms` of now. These helpers build the
commands and read the replies; they work with sync and async redis-py pipelines alike. The script
first forgets workers dead for long, a write that adds no memory, so that a Redis over its
maxmemory takes the heartbeat all the same (shared/redis_full.py): a full Redis must not make live
workers look dead.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from shared import keys
from shared.redis import heartbeats


def add_heartbeat(pipe: Any, worker_id: str, kind: str, streams: list[str], now_ms: int, ttl_ms: int) -> None:
    heartbeats.heartbeat(
        worker_id=worker_id,
        now_ms=now_ms,
        ttl_ms=ttl_ms,
        kind=kind,
        streams=streams,
        pid=os.getpid(),
        host=socket.gethostname(),
    ).eval_on(pipe)


def remove_heartbeat(pipe: Any, worker_id: str) -> None:
    pipe.zrem(keys.WORKERS, worker_id)
    pipe.delete(keys.worker(worker_id))


def live_since(now_ms: int, ttl_ms: int) -> int:
    """The oldest heartbeat score that still counts as live."""
    return now_ms - ttl_ms


def is_live(beat_ms: float | None, now_ms: int, ttl_ms: int) -> bool:
    """Does this heartbeat score (ZSCORE of keys.WORKERS; None: no heartbeat) still count?"""
    return beat_ms is not None and beat_ms >= live_since(now_ms, ttl_ms)


def served_streams(worker_hashes: list[dict[Any, Any]]) -> set[str]:
    """Streams served by the given live workers' hashes (as HGETALL returns them)."""
    served: set[str] = set()
    for fields in worker_hashes:
        raw = fields.get(b"streams", fields.get("streams", b""))
        text = raw.decode() if isinstance(raw, bytes) else raw
        served.update(s for s in text.split(",") if s)
    return served
