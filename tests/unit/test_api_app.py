"""create_app: fails at start on a bad pipelines file, never imports torch, owns one Redis client."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import fakeredis
import pytest

from services.api import server
from services.api.app import create_app
from shared.pipeline_spec import PipelineConfigError
from shared.settings import Settings
from tests.support.api import PIPELINES_YAML, make_settings, running, write_pipelines

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("models: [unclosed", "not valid YAML"),
        (PIPELINES_YAML.replace("json:dumps", "no_such_module_dlpipe:fn"), "no_such_module_dlpipe"),
        (PIPELINES_YAML.replace("json:JSONDecoder", "no_such_module_dlpipe:Model"), "model 'm1'"),
        (PIPELINES_YAML.replace("input: image", "input: smell"), "pipeline 'img'"),
    ],
    ids=["yaml", "missing stage module", "missing model module", "unknown input kind"],
)
def test_a_bad_pipelines_file_fails_at_creation(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(PipelineConfigError, match=fragment):
        create_app(make_settings(write_pipelines(tmp_path, text)))


def test_a_missing_pipelines_file_fails_at_creation(tmp_path: Path) -> None:
    with pytest.raises(PipelineConfigError, match="cannot read"):
        create_app(make_settings(tmp_path / "absent.yaml"))


def test_redis_url_is_required(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="redis_url"):
        create_app(make_settings(write_pipelines(tmp_path), redis_url=None))


def test_the_api_never_imports_torch_with_the_default_pipelines() -> None:
    code = textwrap.dedent(
        """
        import sys
        from fastapi.testclient import TestClient
        from services.api.app import create_app
        from shared.settings import Settings

        app = create_app(Settings(redis_url="redis://127.0.0.1:1/0"))
        app.openapi()
        with TestClient(app) as client:
            assert client.get("/v1/pipelines/image-classify").status_code == 200
        heavy = sorted(m for m in ("torch", "PIL", "torchvision") if m in sys.modules)
        print("heavy:", heavy)
        assert not heavy, heavy
        """
    )
    result = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "heavy: []" in result.stdout


class _Recorder(fakeredis.FakeAsyncRedis):
    made: list[_Recorder] = []

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.closed = False
        _Recorder.made.append(self)

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        self.closed = True
        await super().aclose()


@pytest.mark.anyio
async def test_lifespan_opens_one_client_from_the_url_and_closes_it(settings: Settings) -> None:
    urls: list[str] = []
    _Recorder.made.clear()

    def factory(url: str) -> _Recorder:
        urls.append(url)
        return _Recorder()

    app = create_app(settings, redis_factory=factory)
    assert urls == []  # nothing connects before the app starts
    async with running(app) as client:
        await client.get("/v1/jobs/abc")
        await client.get("/readyz")
        assert len(_Recorder.made) == 1 and not _Recorder.made[0].closed
        assert app.state.redis is _Recorder.made[0]
    assert urls == [settings.redis_url]
    assert _Recorder.made[0].closed and app.state.redis is None


def test_serve_runs_uvicorn_on_the_configured_address(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[Any, dict[str, Any]]] = []
    monkeypatch.setattr(server.uvicorn, "run", lambda app, **kwargs: calls.append((app, kwargs)))
    monkeypatch.setattr(server, "setup_logging", lambda level, role: None)
    server.serve(settings.model_copy(update={"host": "0.0.0.0", "port": 8123}))
    ((app, kwargs),) = calls
    assert app.title == "dlpipe" and app.state.settings.port == 8123
    assert kwargs["host"] == "0.0.0.0" and kwargs["port"] == 8123
    assert kwargs["log_config"] is None  # keeps our logging setup
