"""With API keys set, a job is its submitter's: another key gets 404, exactly as for an unknown id,
through every route that names a job (found in the app's routes, so a new route is tested too)."""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from starlette.routing import Route

from services.api.app import create_app
from shared.settings import Settings
from tests.support.api import running, write_pipelines

pytestmark = pytest.mark.anyio

A, B = "key-of-a-0123456789", "key-of-b-9876543210"
BODY = {
    "inputs": [{"image_base64": base64.b64encode(b"\x89PNG\r\n\x1a\nabc").decode()}],
    "keep_inputs": True,
    "webhook": "https://example.com/hook",
}
UNKNOWN = "0" * 32


@pytest.fixture
async def api(tmp_path: Path, redis_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(redis_url=redis_url, pipelines_file=write_pipelines(tmp_path), api_keys=f"{A},{B}")
    async with running(create_app(settings)) as client:
        yield client


def _as(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _every_route(routes: list[Any]) -> Iterator[Any]:
    """Every route of the app, in included routers too (FastAPI includes them lazily)."""
    for route in routes:
        if hasattr(route, "effective_route_contexts"):
            yield from route.effective_route_contexts()
        elif isinstance(route, APIRoute | Route):
            yield route


def job_routes(api: httpx.AsyncClient) -> list[tuple[str, str]]:
    app = api._transport.app  # type: ignore[attr-defined]
    found = sorted(
        {
            (method, route.path)
            for route in _every_route(app.routes)
            if "{job_id}" in route.path
            for method in route.methods - {"HEAD"}
        }
    )
    assert len(found) >= 5, found  # get, cancel, redeliver, events, inputs (and whatever comes)
    return found


def _url(path: str, job_id: str) -> str:
    return re.sub(r"\{[a-z_]+\}", "0", path.replace("{job_id}", job_id))


async def test_one_key_cannot_reach_another_keys_job_through_any_route(api: httpx.AsyncClient) -> None:
    created = await api.post("/v1/pipelines/img/jobs", json=BODY, headers=_as(A))
    assert created.status_code == 202, created.text
    job_id = created.json()["id"]
    for method, path in job_routes(api):
        theirs = await api.request(method, _url(path, job_id), headers=_as(B))
        unknown = await api.request(method, _url(path, UNKNOWN), headers=_as(B))
        assert theirs.status_code == unknown.status_code == 404, (method, path, theirs.text)
        assert theirs.json() == {
            **unknown.json(),
            "detail": unknown.json()["detail"].replace(UNKNOWN, job_id),
        }
        by_token = await api.request(method, _url(path, job_id), params={"access_token": B})
        assert by_token.status_code in (401, 404), (method, path, by_token.text)  # 401: no query keys there
    # The owner reaches it (reads: 200; the events stream of an ended job ends at once).
    assert (await api.get(f"/v1/jobs/{job_id}", headers=_as(A))).status_code == 200
    assert (await api.get(f"/v1/jobs/{job_id}/inputs/0", params={"access_token": A})).status_code == 200
    assert (await api.get(f"/v1/jobs/{job_id}/inputs/0", params={"access_token": "wrong"})).status_code == 401
    assert (await api.post(f"/v1/jobs/{job_id}/cancel", headers=_as(A))).status_code == 200
    assert (await api.get(f"/v1/jobs/{job_id}/events", params={"access_token": A})).status_code == 200
    # Lists: each key sees its own jobs only.
    mine = (await api.get("/v1/jobs", headers=_as(A))).json()["jobs"]
    assert [j["id"] for j in mine] == [job_id]
    assert (await api.get("/v1/jobs", headers=_as(B))).json() == {"jobs": [], "next_cursor": None}
    for status in ("canceled", None):
        params = {"status": status} if status else {"pipeline": "img"}
        assert (await api.get("/v1/jobs", headers=_as(B), params=params)).json()["jobs"] == []
    assert (await api.get("/v1/jobs")).status_code == 401
