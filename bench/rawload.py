"""A lean HTTP/1.1 load client for the API-alone turn: N keep-alive connections in one event
loop, each sending the same POST again as soon as the last answer is read.

httpx costs about a millisecond of the client's CPU per request; at the hundreds of requests a
second the API turn needs, that client would take the core the API is measured on. Here a
request is one write of prepared bytes and an answer is a status line, headers and a
Content-Length body (what uvicorn sends), so the client costs a few tens of microseconds.
Latency runs from the write to the last byte of the answer; a request counts when its answer
came within the measured window. `on_mark("start"|"end")` runs at the window's ends, as in
bench.client.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class RawWindow:
    wall_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)  # status -> answers (in the window)
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    client_cpu_s: float = 0.0

    @property
    def completed(self) -> int:
        return len(self.latencies_s)


def request_bytes(host: str, port: int, path: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("ascii") + body


async def _read_answer(reader: asyncio.StreamReader) -> int:
    """One HTTP/1.1 answer with a Content-Length body; its status."""
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("the server closed the connection")
    status = int(status_line.split(b" ", 2)[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


async def run(
    host: str,
    port: int,
    request: bytes,
    concurrency: int,
    warmup_s: float,
    duration_s: float,
    accepted: tuple[int, ...] = (202,),
    on_mark: Callable[[str], None] | None = None,
) -> RawWindow:
    window = RawWindow()
    state = {"measuring": False, "stop": False}

    async def one_connection() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while not state["stop"]:
                started = time.perf_counter()
                writer.write(request)
                status = await _read_answer(reader)
                if not state["measuring"] or state["stop"]:
                    continue
                window.statuses[status] = window.statuses.get(status, 0) + 1
                if status in accepted:
                    window.latencies_s.append(time.perf_counter() - started)
                else:
                    window.errors += 1
        except (OSError, ValueError, IndexError, asyncio.IncompleteReadError) as exc:
            window.errors += 1
            if len(window.error_samples) < 5:
                window.error_samples.append(f"{type(exc).__name__}: {exc}")
        finally:
            writer.close()

    tasks = [asyncio.create_task(one_connection()) for _ in range(concurrency)]
    try:
        await asyncio.sleep(warmup_s)
        if on_mark is not None:
            await asyncio.to_thread(on_mark, "start")
        cpu0, t0 = time.process_time(), time.perf_counter()
        state["measuring"] = True
        await asyncio.sleep(duration_s)
        state["stop"] = True
        window.wall_s = time.perf_counter() - t0
        window.client_cpu_s = time.process_time() - cpu0
        if on_mark is not None:
            await asyncio.to_thread(on_mark, "end")
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=30)
    finally:
        state["stop"] = True
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return window
