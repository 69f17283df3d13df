"""A Redis at its maxmemory (noeviction) costs the API a 503 for what it refuses, nothing more.

Two things of redis-py's and Redis's would cost more:

- Reads. A job's view is read from several keys (its hash, its outputs, its deliveries) that
  the workers' scripts change together, so they are read in one atomic step. A MULTI would be
  one, but Redis refuses to queue any command, reads included, while its memory is over
  maxmemory: GET /v1/jobs would answer 503 just when clients poll most, after a submit was
  refused for memory (the refused request's buffer alone can keep Redis over it for a moment).
  A script's reads are never refused: read_keys runs the READ script
  (shared/redis/job_reads.py).
- A refused transaction. redis-py names a command Redis refused in its error by quoting it,
  arguments and all, through textwrap.shorten: about half a second per MiB of input (measured),
  on the event loop, for every refused command of a job's MULTI; a refused 2 x 20 MB submit held
  the API's loop some 18 s. transaction() is a MULTI whose errors name just the command and its key.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.utils import safe_str

from shared.redis import job_reads


async def read_keys(client: Any, hashes: Sequence[str], lists: Sequence[str] = ()) -> list[Any]:
    """HGETALL of each hash (as dicts) and LRANGE 0 -1 of each list, in one atomic step."""
    return await job_reads.read_keys(hashes=hashes, lists=lists).run_async(client)


def _annotate(exception: Exception, number: int, command: Any) -> None:
    """Pipeline.annotate_exception, naming the command and its key only."""
    name = " ".join(safe_str(part) for part in command[:2])
    message = exception.args[0] if exception.args else ""
    exception.args = (
        f"Command # {number} ({name} ...) of pipeline caused error: {message}",
        *exception.args[1:],
    )


def transaction(client: Redis) -> Pipeline:
    """client.pipeline(transaction=True), but a refused command costs microseconds to report."""
    pipe = client.pipeline(transaction=True)
    pipe.annotate_exception = _annotate  # type: ignore[method-assign]
    return pipe
