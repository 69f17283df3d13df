"""Helpers for the API tests: a pipelines file, settings, and the app run in-process.

The app runs in-process: its lifespan is entered by hand and requests go through
httpx.ASGITransport; under the unit tests Redis is a fakeredis server shared by the app's async
client and the tests' sync one (the fixtures are in tests/unit/conftest.py).
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import fakeredis
import httpx
from fastapi import FastAPI

from shared.settings import Settings


# Stage functions and the model class only need to be locatable modules (the API never runs them).
def pipelines_yaml(
    name: str = "img",
    input_kind: str = "image",
    description: str = "A test image pipeline.",
    output: str = '{size: "bytes in the image"}',
) -> str:
    """A pipelines file with one three-stage pipeline (preprocess -> model -> postprocess)."""
    return f"""\
models:
  m1:
    class: json:JSONDecoder
    batching: {{max_batch_size: 4, max_batch_delay_ms: 2}}
pipelines:
  {name}:
    description: {description}
    input: {input_kind}
    output: {output}
    stages:
      - {{name: pre, kind: preprocess, fn: "json:dumps"}}
      - {{name: m, kind: model, model: m1}}
      - {{name: post, kind: postprocess, fn: "json:loads"}}
"""


PIPELINES_YAML = pipelines_yaml()

MAX_INPUTS = 3
MAX_BYTES = 64


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def write_pipelines(folder: Path, text: str = PIPELINES_YAML) -> Path:
    path = folder / "pipelines.yaml"
    path.write_text(text)
    return path


def make_settings(pipelines_file: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "redis_url": "redis://fake.invalid:1/0",
        "pipelines_file": pipelines_file,
        "max_inputs_per_job": MAX_INPUTS,
        "max_input_bytes": MAX_BYTES,
    }
    values.update(overrides)
    return Settings(**values)


def fake_factory(server: fakeredis.FakeServer) -> Callable[[str], Any]:
    return lambda url: fakeredis.FakeAsyncRedis(server=server)


@asynccontextmanager
async def running(app: FastAPI, raise_app_exceptions: bool = True) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan entered, and an HTTP client talking to it."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client
