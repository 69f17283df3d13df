"""Helpers for the API tests: a pipelines file, settings, the app run in-process, and what the
tests count in Redis (job records, the backlog) or send by hand (multipart bodies).

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
import redis
from fastapi import FastAPI

from shared import keys
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

# `img` as above (no description, no output) and `txt`: text, no model stage.
IMG_AND_TXT_YAML = """\
models:
  m1:
    class: json:JSONDecoder
    batching: {max_batch_size: 4, max_batch_delay_ms: 2}
pipelines:
  img:
    input: image
    stages:
      - {name: pre, kind: preprocess, fn: "json:dumps"}
      - {name: m, kind: model, model: m1}
      - {name: post, kind: postprocess, fn: "json:loads"}
  txt:
    input: text
    stages:
      - {name: pre, kind: preprocess, fn: "json:dumps"}
      - {name: post, kind: postprocess, fn: "json:loads"}
"""

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


def api_settings(tmp_path: Path, redis_url: str, **overrides: Any) -> Settings:
    """Settings for the test pipeline on a real Redis (`redis_url`: one the tests started)."""
    return Settings(redis_url=redis_url, pipelines_file=write_pipelines(tmp_path), job_ttl_s=600, **overrides)


def fake_factory(server: fakeredis.FakeServer) -> Callable[[str], Any]:
    return lambda url: fakeredis.FakeAsyncRedis(server=server)


@asynccontextmanager
async def running(app: FastAPI, raise_app_exceptions: bool = True) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan entered, and an HTTP client talking to it."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


def job_count(client: redis.Redis) -> int:
    """Job records: dlpipe:job:<id> and nothing after it (not :outputs, :blob:n, :webhook)."""
    return sum(1 for key in client.scan_iter("dlpipe:job:*") if key.count(b":") == 2)


def no_job_written(client: redis.Redis) -> bool:
    """No job record, no item and no stream entry in Redis."""
    return (
        not client.keys("dlpipe:job:*")
        and not client.keys("dlpipe:item:*")
        and not client.keys("dlpipe:stream:*")
    )


async def assert_422_naming(
    api: httpx.AsyncClient, url: str, field: str, fragment: str, client: redis.Redis, **request: Any
) -> None:
    """POST `request` (json=, or content= and headers=) to `url`: a 422 whose `field` is `field`
    and whose detail starts with it and says `fragment`; no job written."""
    response = await api.post(url, **request)
    assert response.status_code == 422, response.text
    error = response.json()
    assert error["field"] == field, error
    assert error["detail"].startswith(f"{field}: ") and fragment in error["detail"], error
    assert no_job_written(client)


def backlog(client: redis.Redis, pipeline: str) -> int:
    """The pipeline's backlog counter: items accepted and not finished."""
    return int(client.get(keys.backlog(pipeline)) or 0)


Part = tuple[str, str | None, bytes]  # form field name, file name (None: a text field), content


def multipart(parts: list[Part]) -> tuple[bytes, dict[str, str]]:
    """A multipart/form-data body built by hand (httpx sends text-only forms urlencoded)."""
    boundary = "testboundary7f3a"
    chunks = []
    for name, filename, content in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        chunks.append(
            f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + content + b"\r\n"
        )
    body = b"".join(chunks) + f"--{boundary}--\r\n".encode()
    return body, {"content-type": f"multipart/form-data; boundary={boundary}"}
