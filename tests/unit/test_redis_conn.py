"""Redis settings and connections (shared/redis_conn.py): Sentinel when configured, else the URL;
a bad DLPIPE_REDIS_SENTINELS stops a process at start with a clear message."""

from __future__ import annotations

import pytest
import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel
from pydantic import ValidationError

from services import cli
from shared import redis_conn
from shared.settings import Settings
from shared.settings.stack import parse_sentinels


def test_sentinels_parse() -> None:
    assert parse_sentinels("a:26379, 10.0.0.2:1 ,[::1]:7") == [("a", 26379), ("10.0.0.2", 1), ("::1", 7)]
    settings = Settings(redis_sentinels="s1:26379,s2:26380", redis_master_name="prod")
    assert settings.sentinel_nodes() == [("s1", 26379), ("s2", 26380)] and settings.redis_configured()


@pytest.mark.parametrize(
    "bad", ["host", "host:", ":26379", "h:port", "h:0", "h:70000", "a:1,,b:2", "a:1;b:2"]
)
def test_a_bad_sentinel_list_is_refused_naming_the_bad_part(bad: str) -> None:
    with pytest.raises(ValidationError, match="is not host:port"):
        Settings(redis_sentinels=bad)


def test_url_and_sentinels_together_are_refused() -> None:
    with pytest.raises(ValidationError, match="not both"):
        Settings(redis_url="redis://h:1/0", redis_sentinels="h:26379")


def test_a_process_with_bad_sentinels_stops_at_start(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DLPIPE_REDIS_SENTINELS", "127.0.0.1:26379,nohost")
    assert cli.main(["worker", "preprocess"]) == 2
    err = capsys.readouterr().err
    assert "DLPIPE_REDIS_SENTINELS" in err and "'nohost' is not host:port" in err
    assert "default factory" not in err  # only the error itself, not its echoes


def test_sync_client_uses_the_sentinels_when_set() -> None:
    settings = Settings(redis_sentinels="127.0.0.1:1,127.0.0.1:2", redis_master_name="m", redis_retries=4)
    client = redis_conn.sync_client(settings, socket_timeout=7)
    pool = client.connection_pool
    assert isinstance(pool, redis.sentinel.SentinelConnectionPool) and pool.service_name == "m"
    assert pool.connection_kwargs["socket_timeout"] == 7
    assert pool.connection_kwargs["retry"].get_retries() == 4
    sentinels = pool.sentinel_manager.sentinels
    assert [s.connection_pool.connection_kwargs["port"] for s in sentinels] == [1, 2]
    assert sentinels[0].connection_pool.connection_kwargs["socket_timeout"] == redis_conn.SENTINEL_TIMEOUT_S


def test_sync_client_uses_the_url_otherwise() -> None:
    client = redis_conn.sync_client(Settings(redis_url="redis://127.0.0.1:1/3"), socket_timeout=3)
    kwargs = client.connection_pool.connection_kwargs
    assert type(client.connection_pool) is redis.ConnectionPool
    assert (kwargs["port"], kwargs["db"], kwargs["socket_keepalive"]) == (1, 3, True)


def test_async_client_is_a_blocking_pool_either_way() -> None:
    by_sentinel = redis_conn.async_client(
        Settings(redis_sentinels="127.0.0.1:1"), max_connections=9, pool_timeout_s=2, socket_timeout=10
    )
    pool = by_sentinel.connection_pool
    assert isinstance(pool, redis.asyncio.sentinel.SentinelConnectionPool)
    assert isinstance(pool, redis.asyncio.BlockingConnectionPool)
    assert (pool.max_connections, pool.timeout) == (9, 2)
    by_url = redis_conn.async_client(
        Settings(redis_url="redis://127.0.0.1:1/0"), max_connections=5, pool_timeout_s=1, socket_timeout=10
    )
    assert isinstance(by_url.connection_pool, redis.asyncio.BlockingConnectionPool)


def test_no_redis_at_all_is_an_error() -> None:
    with pytest.raises(ValueError, match="DLPIPE_REDIS_SENTINELS"):
        redis_conn.sync_client(Settings(), socket_timeout=1)


def test_replicated_without_min_replicas_is_always_confirmed() -> None:
    seen = redis_conn.wait_after(redis.Redis(port=1).pipeline(), Settings(redis_url="redis://h:1/0"))
    assert seen.confirmed and seen.wanted == 0
    waited = redis_conn.Replicated(wanted=1, timeout_ms=50, acked=0)
    assert not waited.confirmed and waited.describe() == "0 of 1 replicas within 50 ms"
