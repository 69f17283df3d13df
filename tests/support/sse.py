"""Helpers for tests of `GET /v1/jobs/{id}/events`: the app served by uvicorn in the test's loop
(httpx's ASGITransport gives a body only once the app has finished it), and an SSE reader."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from shared.embedded_redis import free_port


@contextlib.asynccontextmanager
async def served(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app under uvicorn on a free port (lifespan and all), and a client for it."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(500):
            if server.started:
                break
            assert not task.done(), "uvicorn stopped"
            await asyncio.sleep(0.01)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            client.app = app  # type: ignore[attr-defined]  # for tests that look at its state
            yield client
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


@dataclass
class Event:
    event: str | None
    data: Any
    id: str | None


async def read_events(lines: AsyncIterator[str]) -> AsyncIterator[Event | str]:
    """Events (data parsed as JSON) and comments (`: keep-alive`, as text) from an SSE body."""
    fields: dict[str, str] = {}
    async for line in lines:
        if line.startswith(":"):
            yield line
            continue
        if line == "":
            if fields:
                yield Event(fields.get("event"), json.loads(fields.get("data", "null")), fields.get("id"))
            fields = {}
            continue
        name, _, value = line.partition(": ")
        fields[name] = value


async def collect_until(
    events: AsyncIterator[Event | str], name: str, timeout_s: float = 20
) -> list[Event | str]:
    """Every event and comment up to and including the first event called `name`."""
    seen: list[Event | str] = []

    async def run() -> None:
        async for event in events:
            seen.append(event)
            if isinstance(event, Event) and event.event == name:
                return
        raise AssertionError(f"the stream ended before a {name!r} event: {seen}")

    await asyncio.wait_for(run(), timeout_s)
    return seen
