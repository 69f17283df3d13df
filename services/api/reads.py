"""Consistent reads that keep working while Redis is full.

A job's view is read from several keys (its hash, its outputs, its deliveries) that the
workers' scripts change together, so they are read in one atomic step. A MULTI would be one,
but Redis refuses to queue any command, reads included, while its memory is over maxmemory
(noeviction): GET /v1/jobs would answer 503 exactly when clients poll most, after a submit was
refused for memory. A script's reads are never refused, so the step is scripts.READ.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from workers import scripts


async def read_keys(client: Any, hashes: Sequence[str], lists: Sequence[str] = ()) -> list[Any]:
    """HGETALL of each hash (as dicts) and LRANGE 0 -1 of each list, in one atomic step."""
    script = client.register_script(scripts.READ)
    replies = await script(keys=[*hashes, *lists], args=[len(hashes)])
    out: list[Any] = [dict(zip(flat[::2], flat[1::2], strict=True)) for flat in replies[: len(hashes)]]
    return out + [list(items) for items in replies[len(hashes) :]]
