"""A worker's Redis connections carry its worker id (CLIENT SETNAME): `CLIENT LIST` tells which
worker holds each one, and from which address (tests/e2e/test_two_hosts.py, across hosts)."""

from __future__ import annotations

from shared.settings import Settings
from workers import runtime


def test_every_connection_of_a_worker_is_named_with_its_id(redis_url: str) -> None:
    worker_id = runtime.new_consumer_id()
    client = runtime.redis_client(Settings(redis_url=redis_url), name=worker_id)
    try:
        assert client.client_getname() == worker_id
        mine = [c for c in client.client_list() if c["name"] == worker_id]
        assert len(mine) == 1 and mine[0]["addr"].startswith("127.0.0.1:")
    finally:
        client.close()
    unnamed = runtime.redis_client(Settings(redis_url=redis_url))
    try:
        assert unnamed.client_getname() is None
    finally:
        unnamed.close()
