"""Streams are trimmed of what every consumer group is done with, and of nothing else.

Real redis-server: the bundled 6.2 (the session's server) and, where the machine has one,
a 7.x redis-server (XINFO GROUPS answers more fields there).
"""

from __future__ import annotations

import pytest
import redis

from shared.redis import scripts
from tests.support.clock import FakeClock
from workers.reclaim import Reclaimer

STREAM = "dlpipe:stream:cpu.p.s"


@pytest.fixture
def client(any_redis: redis.Redis) -> redis.Redis:
    """A client of the bundled Redis 6.2, and of the machine's own redis-server (7.x)."""
    return any_redis


def ids_in(client: redis.Redis) -> list[str]:
    return [i.decode() for i, _ in client.xrange(STREAM)]


def trim(client: redis.Redis) -> tuple[str, int]:
    floor, removed = client.register_script(scripts.TRIM_STREAM)(keys=[STREAM])
    return floor.decode(), int(removed)


def test_pending_and_unread_entries_survive_trimming(client: redis.Redis) -> None:
    client.xgroup_create(STREAM, "cpu", id="0", mkstream=True)
    client.xgroup_create(STREAM, "audit", id="0")
    sent = [client.xadd(STREAM, {"n": str(n)}).decode() for n in range(10)]

    client.xreadgroup("cpu", "a", {STREAM: ">"}, count=6)  # cpu: 0..5 delivered
    client.xack(STREAM, "cpu", sent[0], sent[1], sent[2], sent[4])  # 3 and 5 still pending
    client.xreadgroup("audit", "b", {STREAM: ">"}, count=2)  # audit: 0..1 delivered and acked
    client.xack(STREAM, "audit", sent[0], sent[1])
    assert trim(client) == (sent[1], 1)  # audit has not read 2.. yet: only 0 goes
    assert ids_in(client) == sent[1:]

    client.xreadgroup("audit", "b", {STREAM: ">"})  # audit reads and acks everything
    client.xack(STREAM, "audit", *sent)
    assert trim(client) == (sent[3], 2)  # cpu's oldest pending entry, 3, stays
    assert ids_in(client) == sent[3:]
    claimed = client.xclaim(STREAM, "cpu", "c", 0, [sent[3], sent[5]])  # still there, whole
    assert [(i.decode(), f) for i, f in claimed] == [(sent[3], {b"n": b"3"}), (sent[5], {b"n": b"5"})]

    client.xack(STREAM, "cpu", sent[3], sent[5])
    assert trim(client) == (sent[5], 2)  # 6.. are not read by cpu yet (5: its last delivered)
    assert ids_in(client) == sent[5:]
    assert [i.decode() for i, _ in client.xreadgroup("cpu", "a", {STREAM: ">"})[0][1]] == sent[6:]

    client.xack(STREAM, "cpu", *sent[6:])
    assert trim(client) == (sent[9], 4)
    assert ids_in(client) == sent[9:]  # the last delivered entry is kept
    later = client.xadd(STREAM, {"n": "10"}).decode()
    assert trim(client) == (sent[9], 0)
    assert ids_in(client) == [sent[9], later]


def test_a_stream_no_group_reads_yet_is_left_alone(client: redis.Redis) -> None:
    sent = [client.xadd(STREAM, {"n": str(n)}).decode() for n in range(3)]
    assert trim(client) == ("", 0)
    assert ids_in(client) == sent
    client.delete(STREAM)
    assert trim(client) == ("", 0)


def test_the_reclaimer_trims_one_interval_after_start_then_every_interval(client: redis.Redis) -> None:
    client.xgroup_create(STREAM, "cpu", id="0", mkstream=True)
    sent = [client.xadd(STREAM, {"n": str(n)}).decode() for n in range(4)]
    client.xreadgroup("cpu", "w", {STREAM: ">"}, count=3)
    client.xack(STREAM, "cpu", sent[0], sent[1])  # 2 pending, 3 unread
    clock = FakeClock()
    reclaimer = Reclaimer(
        client, "cpu", "w", [STREAM], lease_ms=60_000, max_deliveries=3, clock=clock, trim_interval_s=5
    )
    reclaimer.take()
    assert ids_in(client) == sent  # not at start
    clock.now += 5
    reclaimer.take()
    assert ids_in(client) == sent[2:]
    client.xack(STREAM, "cpu", sent[2])
    clock.now += 4
    reclaimer.take()
    assert ids_in(client) == sent[2:]  # not due yet
    clock.now += 1
    reclaimer.take()
    assert ids_in(client) == sent[2:]  # 2 is the last delivered: kept; 3 unread
    assert [i.decode() for i, _ in client.xreadgroup("cpu", "w", {STREAM: ">"})[0][1]] == [sent[3]]
