"""A Redis that can evict keys or keeps nothing on disk is reported loudly at start.

A redis-server of our own, configured badly on purpose (no AOF, no RDB, allkeys-lru), and
the session's well-configured one (AOF, noeviction) for contrast.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio
from redis.backoff import NoBackoff
from redis.retry import Retry

from services.supervisor import check_redis_config
from shared.embedded_redis import find_redis_server, free_port, wait_for_redis
from shared.redis_checks import check_redis, check_redis_async, notes, problems
from shared.settings import Settings
from workers.heartbeat import Heartbeat

LOG = logging.getLogger("test.redis_checks")


@pytest.fixture
def bad_redis_url(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    argv = [
        find_redis_server(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(tmp_path),
        "--appendonly",
        "no",
        "--save",
        "",
        "--maxmemory-policy",
        "allkeys-lru",
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        wait_for_redis(url, timeout_s=10, proc=proc)
        yield url
    finally:
        proc.kill()
        proc.wait()


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def assert_both_problems(messages: list[str]) -> None:
    joined = "\n".join(messages)
    assert "UNSAFE REDIS" in joined, joined
    assert "maxmemory-policy is allkeys-lru" in joined and "evict" in joined, joined
    assert "keeps nothing on disk" in joined, joined


def test_the_rules() -> None:
    good = {"maxmemory-policy": "noeviction", "appendonly": "yes", "appendfsync": "always", "save": ""}
    assert problems(good) == [] and notes(good) == []
    assert notes({**good, "appendfsync": "everysec"}) and problems({**good, "appendfsync": "everysec"}) == []
    (rdb_only,) = problems({**good, "appendonly": "no", "save": "3600 1"})
    assert "only RDB snapshots" in rdb_only
    (evicts,) = problems({**good, "maxmemory-policy": "volatile-lru", "maxmemory": "100mb"})
    assert "once maxmemory is reached" in evicts
    assert len(problems({"maxmemory-policy": "allkeys-lru", "appendonly": "no", "save": ""})) == 2


def test_a_badly_configured_redis_is_reported(bad_redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    client = redis.Redis.from_url(bad_redis_url)
    with caplog.at_level(logging.INFO):
        found = check_redis(client, LOG, "(test)")
    client.close()
    assert len(found) == 2
    assert_both_problems(warnings(caplog))


def test_a_well_configured_redis_is_not(redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    client = redis.Redis.from_url(redis_url)  # AOF on, noeviction (shared/embedded_redis.py)
    with caplog.at_level(logging.INFO):
        assert check_redis(client, LOG, "(test)") == []
    client.close()
    assert warnings(caplog) == []
    assert any("appendfsync everysec" in r.getMessage() for r in caplog.records)  # a note, at INFO


def test_a_redis_that_refuses_config_is_reported_as_unchecked(caplog: pytest.LogCaptureFixture) -> None:
    import fakeredis  # noqa: PLC0415 - knows no CONFIG GET, like managed services that rename it

    with caplog.at_level(logging.WARNING):
        (found,) = check_redis(fakeredis.FakeRedis(), LOG, "(test)")
    assert "could not read its configuration" in found
    assert "UNCHECKED REDIS" in "\n".join(warnings(caplog))


def test_a_redis_that_does_not_answer_raises(caplog: pytest.LogCaptureFixture) -> None:
    client = redis.Redis(port=free_port(), socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
    with pytest.raises(redis.ConnectionError):
        check_redis(client, LOG, "(test)")


def test_dlpipe_up_warns(bad_redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        check_redis_config(Settings(redis_url=bad_redis_url))  # as `dlpipe up` passes its settings
    assert_both_problems(warnings(caplog))


def test_each_worker_warns_on_its_first_heartbeat(
    bad_redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = redis.Redis.from_url(bad_redis_url)
    beat = Heartbeat(client, "w1", "preprocess", ["cpu.x.y"], interval_ms=1000, ttl_ms=5000)
    with caplog.at_level(logging.WARNING):
        assert beat.beat() and beat.beat()
    client.close()
    messages = warnings(caplog)
    assert_both_problems(messages)
    assert len(messages) == 2 and all("preprocess worker w1" in m for m in messages)  # once, not per beat


def test_the_api_warns_at_start(bad_redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    client = redis.asyncio.Redis.from_url(bad_redis_url)

    async def check() -> list[str]:
        try:
            return await check_redis_async(client, LOG, "(seen by the api)")
        finally:
            await client.aclose()

    with caplog.at_level(logging.WARNING):
        assert len(asyncio.run(check())) == 2
    assert_both_problems(warnings(caplog))


def test_the_api_app_checks_in_its_lifespan(bad_redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    from fastapi.testclient import TestClient  # noqa: PLC0415

    from services.api.app import create_app  # noqa: PLC0415
    from shared.settings import Settings  # noqa: PLC0415
    from tests.support.waiting import wait_until  # noqa: PLC0415

    app = create_app(Settings(redis_url=bad_redis_url))
    with caplog.at_level(logging.WARNING), TestClient(app) as http:
        assert http.get("/healthz").status_code == 200
        wait_until(lambda: "UNSAFE REDIS" in "\n".join(warnings(caplog)), 10, "the api's warning")
    assert_both_problems(warnings(caplog))


def test_the_embedded_redis_fsyncs_as_configured(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from shared.embedded_redis import redis_command, start_redis  # noqa: PLC0415
    from shared.settings import Settings  # noqa: PLC0415

    assert Settings().redis_appendfsync == "everysec"
    with pytest.raises(ValueError):
        Settings(redis_appendfsync="no")
    with pytest.raises(ValueError):
        redis_command("redis-server", 1, tmp_path, "no")
    proc, port = start_redis(tmp_path / "r", appendfsync="always")
    client = redis.Redis(port=port)
    try:
        assert client.config_get("appendfsync") == {"appendfsync": "always"}
        with caplog.at_level(logging.INFO):
            assert check_redis(client, LOG, "(test)") == []
        assert not any("appendfsync" in r.getMessage() for r in caplog.records)  # nothing to note
    finally:
        client.close()
        proc.kill()
        proc.wait()
