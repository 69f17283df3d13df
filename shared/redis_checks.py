"""Is the Redis in use safe for dlpipe's queues? Say so loudly at start when it is not.

dlpipe keeps every accepted job, its queued work and its results in Redis. Two settings of
Redis can make accepted jobs vanish without any error:

- `maxmemory-policy` other than `noeviction`: once `maxmemory` is reached Redis deletes
  keys to make room: job records, item hashes, whole streams of queued work;
- nothing on disk (`appendonly no` and no RDB `save` points): a Redis restart starts empty.

RDB snapshots alone (`appendonly no`, some `save` points; Redis's default) lose whatever
changed since the last snapshot. `appendfsync everysec` is reported as a note, not a
problem: see docs/reliability.md.

`check_redis` (sync clients) and `check_redis_async` (the API's asyncio client) read the
configuration with CONFIG GET (one round trip) and log one WARNING per problem. A Redis that
refuses CONFIG (managed services often rename it) gets one WARNING saying the check could not
be made. `dlpipe up`, the API and every worker (on its first heartbeat) call them at start.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import redis

from shared import codecs

CONFIG_NAMES = ("maxmemory-policy", "maxmemory", "appendonly", "appendfsync", "save")


def problems(config: Mapping[str, str]) -> list[str]:
    """What in this Redis configuration (CONFIG GET names -> values) can lose accepted jobs."""
    found: list[str] = []
    policy = config.get("maxmemory-policy", "noeviction")
    if policy != "noeviction":
        limit = config.get("maxmemory", "0")
        when = "once maxmemory is reached" if limit not in ("", "0") else "as soon as a maxmemory is set"
        found.append(
            f"maxmemory-policy is {policy}: Redis may evict keys {when}, and accepted jobs, queued "
            "work and results would silently disappear; set maxmemory-policy noeviction"
        )
    aof = config.get("appendonly", "no") == "yes"
    save = config.get("save", "").strip()
    if not aof and not save:
        found.append(
            "Redis keeps nothing on disk (appendonly no, no RDB save points): a Redis restart loses "
            "every queued job; set appendonly yes"
        )
    elif not aof:
        found.append(
            f"Redis keeps only RDB snapshots (appendonly no, save {save!r}): a Redis restart loses "
            "the jobs accepted since the last snapshot; set appendonly yes"
        )
    return found


def notes(config: Mapping[str, str]) -> list[str]:
    """Facts worth an INFO line: how much a power loss may cost."""
    if config.get("appendonly") == "yes" and config.get("appendfsync") != "always":
        return [
            f"AOF appendfsync {config.get('appendfsync', '?')}: a process crash loses nothing handed "
            "to the kernel, a power loss can lose the last second or two of accepted jobs "
            "(appendfsync always: none)"
        ]
    return []


def _flat(reply: Any) -> dict[str, str]:
    if isinstance(reply, Mapping):
        return {codecs.text(k): codecs.text(v) for k, v in reply.items()}
    values = [codecs.text(v) for v in reply or []]
    return dict(zip(values[::2], values[1::2], strict=True))


def report(config: Mapping[str, str], log: logging.Logger, where: str) -> list[str]:
    """Log the problems (WARNING) and notes (INFO) of one Redis configuration; return the problems."""
    found = problems(config)
    for problem in found:
        log.warning("UNSAFE REDIS %s: %s", where, problem)
    for note in notes(config):
        log.info("redis %s: %s", where, note)
    return found


def _refused(exc: Exception, log: logging.Logger, where: str) -> list[str]:
    problem = (
        f"could not read its configuration ({exc}); check yourself that maxmemory-policy is "
        "noeviction and appendonly is yes"
    )
    log.warning("UNCHECKED REDIS %s: %s", where, problem)
    return [problem]


def check_redis(client: redis.Redis, log: logging.Logger, where: str) -> list[str]:
    """Read a sync client's Redis configuration and report it; returns the problems found.

    Connection errors propagate (the caller decides whether to retry); a refused CONFIG is
    reported as a problem of its own."""
    try:
        config: dict[str, str] = {}
        for name in CONFIG_NAMES:
            config.update(_flat(client.config_get(name)))
    except (redis.ConnectionError, redis.TimeoutError):
        raise
    except redis.ResponseError as exc:
        return _refused(exc, log, where)
    return report(config, log, where)


async def check_redis_async(client: Any, log: logging.Logger, where: str) -> list[str]:
    """check_redis for a redis.asyncio client."""
    try:
        config: dict[str, str] = {}
        for name in CONFIG_NAMES:
            config.update(_flat(await client.config_get(name)))
    except (redis.ConnectionError, redis.TimeoutError):
        raise
    except redis.ResponseError as exc:
        return _refused(exc, log, where)
    return report(config, log, where)
