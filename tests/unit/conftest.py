"""Fixtures of the unit tests: one fakeredis server per test, the sync client on it, and the API
app run in-process against it (the helpers are in tests/support/api.py).

Every unit test that needs Redis uses these: `sync_redis` (also under the name `client`) and the
app's async clients all talk to the same `fake_server`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import fakeredis
import httpx
import pytest

from services.api.app import create_app
from shared.settings import Settings
from tests.support.api import fake_factory, make_settings, running, write_pipelines


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(write_pipelines(tmp_path))


@pytest.fixture
def fake_server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def sync_redis(fake_server: fakeredis.FakeServer) -> Iterator[fakeredis.FakeRedis]:
    fake = fakeredis.FakeRedis(server=fake_server)
    yield fake
    fake.close()


@pytest.fixture
def client(sync_redis: fakeredis.FakeRedis) -> fakeredis.FakeRedis:
    """The same client, under the name the worker-side modules use."""
    return sync_redis


@pytest.fixture
async def api(settings: Settings, fake_server: fakeredis.FakeServer) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, redis_factory=fake_factory(fake_server))
    async with running(app) as client:
        yield client
