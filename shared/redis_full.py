"""Redis at its maxmemory (noeviction): how its refusal reads, and the writes that must pass anyway.

Redis refuses a command that may add memory (a `denyoom` one: SET, HSET, XADD, XGROUP CREATE, ...)
while its memory is over `maxmemory`: `OOM command not allowed when used memory > 'maxmemory'`
(redis-py's OutOfMemoryError). A script's refused write comes from 6.2 (the bundled redis-server)
as a plain ResponseError with those words inside (`Error running script ...`): both are matched.

New work is what must be refused then (the API answers 503, DLPIPE_MAX_BACKLOG_BYTES keeps it
rare); the workers that finish old work, and so free memory, must not be. Redis checks a script
only until its first write: a script whose first write adds no memory (a DEL, HDEL, XACK or
ZREMRANGEBYSCORE, even one that changes nothing) may then write whatever it needs. Every script a
worker runs to move work along starts so (COMPLETE_STAGE with its XACK, START_JOB, the heartbeat),
and what is only counted (metrics) is dropped, logged, rather than stop a worker.
"""

from __future__ import annotations

from redis.exceptions import OutOfMemoryError, ResponseError

OUT_OF_MEMORY = "command not allowed when used memory > 'maxmemory'"  # Redis's words for it


def is_out_of_memory(exc: BaseException) -> bool:
    """A Redis error refusing a write at maxmemory (noeviction), as Redis 7 or 6.2 says it."""
    return isinstance(exc, OutOfMemoryError) or (isinstance(exc, ResponseError) and OUT_OF_MEMORY in str(exc))
