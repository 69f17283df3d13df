"""The embedded Redis's memory limit (DLPIPE_REDIS_MAXMEMORY) is on its command line, with
noeviction; and the byte budget's admission script (scripts.ADMIT with the byte keys), against
fakeredis."""

from __future__ import annotations

from pathlib import Path

import fakeredis
import pytest
from pydantic import ValidationError

from shared import keys
from shared.embedded_redis import redis_command
from shared.redis import scripts
from shared.settings import Settings


def options(command: list[str]) -> dict[str, str]:
    """`--name value` pairs of a redis-server command line."""
    return dict(zip(command[1::2], command[2::2], strict=True))


def test_the_embedded_redis_command_line_carries_maxmemory_and_noeviction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings()
    assert settings.redis_maxmemory == "2gb"
    line = options(
        redis_command("redis-server", 7001, tmp_path, settings.redis_appendfsync, settings.redis_maxmemory)
    )
    assert line["--maxmemory"] == "2gb" and line["--maxmemory-policy"] == "noeviction"
    monkeypatch.setenv("DLPIPE_REDIS_MAXMEMORY", "512MB")
    assert (
        options(redis_command("redis-server", 7001, tmp_path, "everysec", Settings().redis_maxmemory))[
            "--maxmemory"
        ]
        == "512MB"
    )
    for off in ("0", ""):  # no limit, still noeviction
        limit = Settings(redis_maxmemory=off).redis_maxmemory
        line = options(redis_command("redis-server", 7001, tmp_path, "everysec", limit))
        assert line["--maxmemory"] == "0" and line["--maxmemory-policy"] == "noeviction"
    for bad in ("2 gb", "lots", "-1", "1.5gb", "2tb"):
        with pytest.raises(ValidationError):
            Settings(redis_maxmemory=bad)
        with pytest.raises(ValueError, match="maxmemory"):
            redis_command("redis-server", 7001, tmp_path, "everysec", bad)


def test_admission_by_bytes_counts_held_bytes_and_open_grants_and_lets_them_lapse(
    client: fakeredis.FakeRedis,
) -> None:

    def admit(now: int, grant: str, items: int, nbytes: int, byte_cap: int = 1000) -> list[int]:
        reply = client.eval(
            scripts.ADMIT,
            4,
            keys.backlog("p"),
            keys.admissions("p"),
            keys.BYTES,
            keys.BYTE_GRANTS,
            now,
            1000,
            100,
            grant,
            items,
            byte_cap,
            nbytes,
        )
        return [int(x) for x in reply]

    client.hset(keys.BYTES, "held", 400)
    assert admit(100, "a", 1, 500) == [1, 0, 400]  # 400 < 1000: granted, and its 500 bytes count
    assert admit(200, "b", 1, 50) == [1, 1, 900]  # 400 + 500 < 1000: granted (to 950)
    assert admit(300, "c", 1, 100) == [1, 2, 950]  # may take it to 1050: one job over at most
    assert admit(400, "d", 1, 1) == [0, 3, 1050]  # at or over: refused, and nothing taken
    assert client.zcard(keys.BYTE_GRANTS) == 3 and client.zcard(keys.admissions("p")) == 3
    assert sorted(client.zrange(keys.admissions("p"), 0, -1)) == [b"a:1:500", b"b:1:50", b"c:1:100"]
    # The grants lapse (their jobs were never written): the room comes back by itself.
    assert admit(1400, "e", 1, 10) == [1, 0, 400]
    # A held count below zero (lost updates) counts as zero; the open grant's 10 bytes count.
    client.hset(keys.BYTES, "held", -9)
    assert admit(1500, "f", 1, 1, byte_cap=10) == [0, 1, 10]
    assert admit(1500, "g", 1, 1, byte_cap=11) == [1, 1, 10]
