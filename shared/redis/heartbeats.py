"""The HEARTBEAT script (shared/heartbeat.py): a worker's beat in keys.WORKERS and its record
(keys.worker). Its typed function (shared/redis/scripts.py); what it does:
shared/redis/lua/heartbeat.lua."""

from __future__ import annotations

from collections.abc import Sequence

from shared import keys
from shared.redis import scripts
from shared.redis.scripts import ScriptCall


def heartbeat(
    *, worker_id: str, now_ms: int, ttl_ms: int, kind: str, streams: Sequence[str], pid: int, host: str
) -> ScriptCall[None]:
    """Beat for `worker_id` (a `kind` of worker reading `streams`, process `pid` on `host`)."""
    return ScriptCall(
        scripts.HEARTBEAT,
        [keys.WORKERS, keys.worker(worker_id)],
        [worker_id, now_ms, ttl_ms, kind, ",".join(streams), str(pid), host],
        lambda _: None,
    )
