"""Fixtures shared by the integration tests (the helpers behind them are in tests/support/).

Each one starts something for a test and stops it at the end whatever the test did: worker
processes, webhook receivers, supervisor processes, the stepped `sums` stack, the API in-process.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from services.api.app import create_app
from shared.pipeline_spec import PipelinesConfig, load_pipelines
from shared.settings import Settings
from tests.support.hooks import Hook, Receiver, Rig, settings_for
from tests.support.procs import Procs
from tests.support.stack import Stack
from tests.support.upprocess import UpProcess
from workers.models.base import Model


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    """Worker processes the test starts (procs.start); killed at the end if still running."""
    started = Procs(tmp_path)
    yield started
    started.kill_all()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A webhook receiver on 127.0.0.1 answering 204 to every POST."""
    rec = Receiver()
    yield rec
    rec.close()


@pytest.fixture
def hooks() -> Iterator[list[Hook]]:
    """The Hooks a test starts (tests.support.hooks.start_hook); closed at the end."""
    started: list[Hook] = []
    yield started
    for hook in started:
        hook.close()


@pytest.fixture
def api_client(redis_url: str, tmp_path: Path) -> Iterator[TestClient]:
    """The API in-process (a TestClient, lifespan entered) on the test's Redis, with the webhook
    tests' settings (tests.support.hooks.settings_for)."""
    with TestClient(create_app(settings_for(redis_url, tmp_path))) as client:
        yield client


@pytest.fixture
def rig(
    redis_client: redis.Redis,
    redis_url: str,
    tmp_path: Path,
    procs: Procs,
    hooks: list[Hook],
    api_client: TestClient,
) -> Rig:
    """The webhook tests' Redis, processes, receivers and API together (tests.support.hooks.Rig)."""
    return Rig(redis_client, redis_url, tmp_path, procs, hooks, api_client)


@pytest.fixture(scope="module")
def bundled_config() -> PipelinesConfig:
    """The bundled pipelines file (the default DLPIPE_PIPELINES_FILE), loaded once a module."""
    return load_pipelines(Settings().pipelines_file)


@pytest.fixture(scope="module")
def mtcnn_nets(bundled_config: PipelinesConfig) -> dict[str, Model]:
    """MTCNN's three nets with their real weights, as the bundled file builds them, on the CPU;
    loaded once a module."""
    import torch

    from workers.inference import load_models

    return load_models(bundled_config, ["mtcnn_pnet", "mtcnn_rnet", "mtcnn_onet"], torch.device("cpu"))


@pytest.fixture
def stack(redis_url: str, tmp_path: Path) -> Iterator[Stack]:
    """The `sums` pipeline's workers stepped by hand on the test's Redis (tests.support.stack)."""
    made = Stack(redis_url, tmp_path)
    yield made
    made.client.close()


@pytest.fixture
def ups() -> Iterator[list[UpProcess]]:
    """Supervisor processes started by a test; killed at the end if the test left them running."""
    started: list[UpProcess] = []
    yield started
    for up in started:
        up.kill()
