"""The one load client every HTTP system gets: N concurrent clients in one asyncio loop.

Each client POSTs a job (the same JSON body for every system); a synchronous system answers
with the result. dlpipe is asynchronous: by default the POST carries `Prefer: wait=<timeout>`, so
dlpipe answers 200 with the final job when it ends in time (one request per job, as the others),
and a job still running then is long-polled (GET /v1/jobs/{id}?wait_s=). With `poll_interval_s`
set, the client instead takes the 202 and polls GET /v1/jobs/{id} at that interval until the job
is final (what a client without either feature costs the stack). Load is continuous: a warmup period, then the
measured window (a duration, or until `requests` more have completed), then the clients stop
submitting and the requests in flight finish uncounted. A request counts if it completed within
the window; its latency runs from just before its POST to the moment the client saw it final.
At both ends of the window `on_mark("start"|"end")` runs (in a thread) so the caller can read
CPU times and model counters exactly there. With `arrivals_per_s` the load is open instead:
requests arrive as a Poisson process at that rate, whatever the answers do.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

log = logging.getLogger(__name__)

FINAL = ("succeeded", "failed", "canceled")


@dataclass(frozen=True)
class Load:
    path: str  # POST here, e.g. /v1/pipelines/image-classify/jobs
    bodies: list[bytes]  # JSON bodies, used in turn
    concurrency: int = 8
    warmup_s: float = 5.0
    duration_s: float = 30.0
    requests: int | None = None  # instead of duration_s: measure until this many have completed
    poll_interval_s: float | None = None  # None: Prefer: wait and long polls
    timeout_s: float = 120.0
    # Open loop instead of `concurrency` clients: requests arrive as a Poisson process at this
    # rate, each on its own (up to `max_in_flight` at once), whatever the answers do; a request's
    # latency runs from its arrival time (no coordinated omission).
    arrivals_per_s: float | None = None
    max_in_flight: int = 2048
    seed: int = 0


@dataclass
class Window:
    """What the measured window saw."""

    wall_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    polls: int = 0
    client_cpu_s: float = 0.0

    @property
    def completed(self) -> int:
        return len(self.latencies_s)


def _check_result(system_answer: dict[str, Any]) -> str | None:
    """None if the answer holds a succeeded output with a result, else why not."""
    outputs = system_answer.get("outputs")
    if not isinstance(outputs, list) or not outputs:
        return f"no outputs in {str(system_answer)[:200]}"
    first = outputs[0]
    if first.get("status", "succeeded") != "succeeded" or first.get("result") is None:
        return f"output not succeeded: {str(first)[:200]}"
    return None


async def run_load(base_url: str, load: Load, on_mark: Callable[[str], None] | None = None) -> Window:
    window = Window()
    state = {"measuring": False, "stop": False, "remaining": load.requests}
    bodies = itertools.cycle(load.bodies)
    done_measuring = asyncio.Event()
    connections = load.concurrency * 2 if not load.arrivals_per_s else load.max_in_flight
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=min(connections, 256))
    headers = {"Content-Type": "application/json"}
    long_poll = load.poll_interval_s is None
    if long_poll:
        headers["Prefer"] = f"wait={load.timeout_s:g}"
    async with httpx.AsyncClient(base_url=base_url, timeout=load.timeout_s, limits=limits) as http:

        def record(started: float, problem: str | None) -> bool:
            """Count a request that ended within the window (an error, or its latency from
            `started`); True for one counted as completed."""
            if not state["measuring"] or state["stop"]:
                return False
            if problem is not None:
                window.errors += 1
                if len(window.error_samples) < 5:
                    window.error_samples.append(problem)
                return False
            window.latencies_s.append(time.perf_counter() - started)
            return True

        async def one_request() -> tuple[float, str | None]:
            started = time.perf_counter()
            response = await http.post(load.path, content=next(bodies), headers=headers)
            if response.status_code == 202:  # asynchronous: poll the job until final
                job = response.json()
                while job.get("status") not in FINAL:
                    if not long_poll:
                        await asyncio.sleep(load.poll_interval_s or 0)
                    if state["measuring"]:
                        window.polls += 1
                    params = {"wait_s": f"{load.timeout_s:g}"} if long_poll else None
                    polled = await http.get(f"/v1/jobs/{job['id']}", params=params)
                    polled.raise_for_status()
                    job = polled.json()
            elif response.status_code != 200:
                return started, f"HTTP {response.status_code}: {response.text[:200]}"
            else:
                job = response.json()
            return started, _check_result(job)

        async def one_client() -> None:
            while not state["stop"]:
                try:
                    started, problem = await one_request()
                except (httpx.HTTPError, ValueError, KeyError) as exc:
                    started, problem = time.perf_counter(), f"{type(exc).__name__}: {exc}"
                    await asyncio.sleep(0.05)  # a server that refuses at once must not spin the client
                if record(started, problem) and state["remaining"] is not None:
                    state["remaining"] -= 1
                    if state["remaining"] <= 0:
                        done_measuring.set()

        async def one_arrival(arrived: float) -> None:
            try:
                _, problem = await one_request()
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                problem = f"{type(exc).__name__}: {exc}"
            record(arrived, problem)

        async def arrivals(rate: float) -> None:
            """Poisson arrivals: exponential gaps, each request started at its arrival time."""
            rng = random.Random(load.seed)
            in_flight: set[asyncio.Task[None]] = set()
            next_at = time.perf_counter()
            try:
                while not state["stop"]:
                    next_at += rng.expovariate(rate)
                    delay = next_at - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    if len(in_flight) >= load.max_in_flight:
                        record(next_at, f"over {load.max_in_flight} requests in flight")
                        continue
                    task = asyncio.create_task(one_arrival(next_at))
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
            finally:
                if in_flight:
                    await asyncio.wait(in_flight, timeout=load.timeout_s)

        if load.arrivals_per_s:
            clients = [asyncio.create_task(arrivals(load.arrivals_per_s))]
        else:
            clients = [asyncio.create_task(one_client()) for _ in range(load.concurrency)]
        try:
            await asyncio.sleep(load.warmup_s)
            if on_mark is not None:
                await asyncio.to_thread(on_mark, "start")
            cpu0, t0 = time.process_time(), time.perf_counter()
            state["measuring"] = True
            if load.requests is None:
                await asyncio.sleep(load.duration_s)
            else:
                await asyncio.wait_for(done_measuring.wait(), timeout=load.timeout_s * load.requests)
            state["stop"] = True
            window.wall_s = time.perf_counter() - t0
            window.client_cpu_s = time.process_time() - cpu0
            if on_mark is not None:
                await asyncio.to_thread(on_mark, "end")
            await asyncio.wait_for(asyncio.gather(*clients), timeout=load.timeout_s)
        finally:
            state["stop"] = True
            for task in clients:
                task.cancel()
            await asyncio.gather(*clients, return_exceptions=True)
    if window.errors:
        log.warning("%d requests failed, e.g. %s", window.errors, window.error_samples[:1])
    return window
