"""Every process's connection to Redis, built here and nowhere else.

`sync_client(settings, ...)` (workers, the notifier and rq, the supervisor, the CLI) and
`async_client(settings, ...)` (the API: a blocking pool) connect to `DLPIPE_REDIS_URL`, or,
with `DLPIPE_REDIS_SENTINELS`, to the primary the sentinels name (`DLPIPE_REDIS_MASTER_NAME`),
through redis-py's Sentinel. A Sentinel-managed connection asks the sentinels for the primary
each time it connects, and a connection that finds its server demoted (READONLY) drops itself:
after a failover every client reconnects to the new primary by itself. Every client retries a
command on a lost connection with capped exponential backoff (DLPIPE_REDIS_RETRIES,
DLPIPE_REDIS_RETRY_CAP_S); the processes' own loops back off beyond that (workers/runtime.py).

Replication is asynchronous. `wait_after(pipe, settings)` makes a pipeline send `WAIT
<DLPIPE_REDIS_MIN_REPLICAS> <DLPIPE_REDIS_WAIT_TIMEOUT_MS>` on the connection its commands
went on, right after them: the one server that applied them says how many replicas have them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio
import redis.asyncio.retry
import redis.asyncio.sentinel
import redis.retry
import redis.sentinel
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.exceptions import RedisError

if TYPE_CHECKING:
    from shared.settings import Settings

RETRY_BASE_S = 0.05  # the first wait before a command is tried again; doubled each time, capped
SENTINEL_TIMEOUT_S = 0.5  # a sentinel that does not answer in this long is skipped for the next one
NO_PRIMARY = "redis: failing over / no primary"  # /readyz's reason while the sentinels name none


def _backoff(settings: Settings) -> ExponentialWithJitterBackoff:
    return ExponentialWithJitterBackoff(cap=settings.redis_retry_cap_s, base=RETRY_BASE_S)


def _secret(value: Any) -> str | None:
    return value.get_secret_value() if value is not None else None


def _sentinel_kwargs(settings: Settings, retry: Any) -> dict[str, Any]:
    # One try per sentinel and a short timeout: discovery moves on to the next one at once
    # (redis-py's default would retry a dead sentinel for seconds before asking another).
    return {
        "socket_timeout": SENTINEL_TIMEOUT_S,
        "socket_connect_timeout": SENTINEL_TIMEOUT_S,
        "password": _secret(settings.redis_sentinel_password),
        "retry": retry,
    }


def _check(settings: Settings) -> None:
    if not settings.redis_configured():
        raise ValueError("no Redis: set DLPIPE_REDIS_URL or DLPIPE_REDIS_SENTINELS")


def sync_client(
    settings: Settings, *, socket_timeout: float, socket_connect_timeout: float = 5.0, **kwargs: Any
) -> redis.Redis:
    """A redis-py client for the configured Redis (`kwargs`: more connection options)."""
    _check(settings)
    retry = redis.retry.Retry(_backoff(settings), settings.redis_retries)
    options = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_connect_timeout,
        "retry": retry,
        **kwargs,
    }
    if settings.redis_sentinels:
        sentinel = redis.sentinel.Sentinel(
            settings.sentinel_nodes(),
            sentinel_kwargs=_sentinel_kwargs(settings, redis.retry.Retry(NoBackoff(), 0)),
        )
        options.setdefault("socket_keepalive", True)
        return sentinel.master_for(
            settings.redis_master_name,
            password=_secret(settings.redis_password),
            db=settings.redis_db,
            **options,
        )
    assert settings.redis_url
    return client_for_url(settings.redis_url, **options)


def client_for_url(url: str, **kwargs: Any) -> redis.Redis:
    """A client for one server by URL (a Redis this process started itself, or DLPIPE_REDIS_URL).
    TCP keepalive notices a peer that vanished without a word; a unix socket has no such option
    (redis-py refuses it) and needs none."""
    if not url.startswith("unix:"):
        kwargs.setdefault("socket_keepalive", True)
    return redis.Redis.from_url(url, **kwargs)


class BlockingSentinelPool(
    redis.asyncio.sentinel.SentinelConnectionPool, redis.asyncio.BlockingConnectionPool
):
    """A Sentinel-managed asyncio pool that waits for a free connection (BlockingConnectionPool)
    instead of failing at once with "Too many connections"."""


def async_client(
    settings: Settings,
    *,
    max_connections: int,
    pool_timeout_s: float,
    socket_timeout: float,
    socket_connect_timeout: float = 5.0,
) -> redis.asyncio.Redis:
    """An asyncio client with a blocking pool of `max_connections` (a caller finding them all in
    use waits up to `pool_timeout_s`); it owns its pool (aclose() closes it)."""
    _check(settings)
    retry = redis.asyncio.retry.Retry(_backoff(settings), settings.redis_retries)
    options: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_connect_timeout,
        "retry": retry,
        "health_check_interval": 30,
        "max_connections": max_connections,
        "timeout": pool_timeout_s,
    }
    if settings.redis_sentinels:
        sentinel = redis.asyncio.sentinel.Sentinel(
            settings.sentinel_nodes(),
            sentinel_kwargs=_sentinel_kwargs(settings, redis.asyncio.retry.Retry(NoBackoff(), 0)),
        )
        return sentinel.master_for(
            settings.redis_master_name,
            connection_pool_class=BlockingSentinelPool,
            password=_secret(settings.redis_password),
            db=settings.redis_db,
            **options,
        )
    assert settings.redis_url
    pool = redis.asyncio.BlockingConnectionPool.from_url(settings.redis_url, **options)
    return redis.asyncio.Redis.from_pool(pool)


def describe(settings: Settings) -> str:
    """Where the Redis is, for logs (no password)."""
    if settings.redis_sentinels:
        return f"sentinel master {settings.redis_master_name!r} via {settings.redis_sentinels}"
    return redact_url(settings.redis_url or "")


def redact_url(url: str) -> str:
    """The URL without its password, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname or ''}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


async def sentinel_problem(client: redis.asyncio.Redis) -> str | None:
    """For a Sentinel-managed client: NO_PRIMARY if the sentinels name no primary now (a failover
    under way), asked of them directly (one try each, short timeouts: no command retries)."""
    pool = client.connection_pool
    if not isinstance(pool, redis.asyncio.sentinel.SentinelConnectionPool):
        return None
    try:
        await pool.sentinel_manager.discover_master(pool.service_name)
    except redis.asyncio.sentinel.MasterNotFoundError:
        return NO_PRIMARY
    return None


def is_no_primary(exc: BaseException) -> bool:
    """Is this error the sentinels naming no primary (a failover under way, or none reachable)?"""
    return isinstance(exc, (redis.sentinel.MasterNotFoundError, redis.asyncio.sentinel.MasterNotFoundError))


# -- WAIT --------------------------------------------------------------------------------------


@dataclass
class Replicated:
    """What a WAIT sent after a pipeline's commands said: `acked` replicas have them (None: the
    WAIT itself failed, `error` says why). `wanted` 0: no WAIT was sent (always confirmed)."""

    wanted: int
    timeout_ms: int
    acked: int | None = None
    error: BaseException | None = field(default=None)

    @property
    def confirmed(self) -> bool:
        return self.wanted == 0 or (self.acked is not None and self.acked >= self.wanted)

    def describe(self) -> str:
        if self.error is not None:
            return f"WAIT failed ({self.error})"
        return f"{self.acked} of {self.wanted} replicas within {self.timeout_ms} ms"


def wait_after(pipe: Any, settings: Settings) -> Replicated:
    """Have `pipe` (sync or asyncio, transaction or not) send WAIT right after its commands, on the
    same connection, once they succeeded; the returned Replicated is filled when it executes.

    A failed WAIT is recorded, never raised from inside the pipeline: redis-py would take it for a
    failed execution and send the commands again. Its connection is dropped (its reply unread)."""
    seen = Replicated(settings.redis_min_replicas, settings.redis_wait_timeout_ms)
    if seen.wanted == 0:
        return seen
    args = ("WAIT", seen.wanted, seen.timeout_ms)
    for name in ("_execute_transaction", "_execute_pipeline"):  # which one runs is known at execute()
        inner: Callable[..., Any] = getattr(pipe, name)
        if isinstance(pipe, redis.asyncio.client.Pipeline):
            setattr(pipe, name, _async_waiting(inner, args, seen))
        else:
            setattr(pipe, name, _sync_waiting(inner, args, seen))
    return seen


def _async_waiting(inner: Callable[..., Any], args: tuple[Any, ...], seen: Replicated) -> Callable[..., Any]:
    async def execute(connection: Any, commands: Any, raise_on_error: bool) -> Any:
        result = await inner(connection, commands, raise_on_error)
        try:
            await connection.send_command(*args)
            seen.acked = int(await connection.read_response())
        except (RedisError, OSError) as exc:
            seen.error = exc
            await connection.disconnect()
        except BaseException:
            await connection.disconnect()
            raise
        return result

    return execute


def _sync_waiting(inner: Callable[..., Any], args: tuple[Any, ...], seen: Replicated) -> Callable[..., Any]:
    def execute(connection: Any, commands: Any, raise_on_error: bool) -> Any:
        result = inner(connection, commands, raise_on_error)
        try:
            connection.send_command(*args)
            seen.acked = int(connection.read_response())
        except (RedisError, OSError) as exc:
            seen.error = exc
            connection.disconnect()
        return result

    return execute
