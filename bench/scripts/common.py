"""What the one-stack scripts (e2e_throughput.py, face_detect.py) share: a stack to measure (a
running one, or a redis-server and `dlpipe up` of their own), clients that submit one-image jobs
and poll each to its end, the model workers' batch counters over the measured window, and
nearest-rank latency percentiles. Not a script: the scripts put the repository on sys.path first."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import redis

from shared import keys
from shared.embedded_redis import free_port, start_redis

REPO = Path(__file__).resolve().parents[2]
FINAL = ("succeeded", "failed", "canceled")


def model_counters(client: redis.Redis) -> dict[str, dict[str, float]]:
    """Every model's stats hash (keys.model_stats) as it is now: batches, items, forward_ms..."""
    counters = {}
    for key in client.scan_iter(match=keys.model_stats("*")):
        name = key.decode().rsplit(":", 1)[1]
        counters[name] = {k.decode(): float(v) for k, v in client.hgetall(key).items()}
    return counters


def model_window(
    before: dict[str, dict[str, float]], after: dict[str, dict[str, float]], wall_s: float
) -> dict[str, dict[str, Any]]:
    """Per model that ran a batch between the two readings: its batches, items, mean items per
    batch and the share of the window it spent in forward passes."""
    models = {}
    for name, totals in after.items():
        delta = {k: v - before.get(name, {}).get(k, 0.0) for k, v in totals.items()}
        if delta.get("batches"):
            models[name] = {
                "batches": int(delta["batches"]),
                "items": int(delta["items"]),
                "mean_batch_size": round(delta["items"] / delta["batches"], 2),
                "duty_cycle": round(delta.get("forward_ms", 0.0) / 1000 / wall_s, 3),
            }
    return models


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank q-th quantile (0 <= q <= 1)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def latency_ms(latencies_s: list[float], quantiles: tuple[float, ...]) -> dict[str, float]:
    """{"p50": ms, ...}: each nearest-rank quantile of the latencies, in milliseconds."""
    return {f"p{q * 100:g}": round(percentile(latencies_s, q) * 1000, 1) for q in quantiles}


def wait_ready(base_url: str, proc: subprocess.Popen | None, timeout_s: float = 180) -> None:
    """Until GET /readyz answers 200; an error if `proc` exits first or the time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"dlpipe up exited with {proc.returncode}")
        try:
            if httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError("stack not ready")


@contextmanager
def stack(
    url: str | None, redis_url: str | None, prefix: str, settings: dict[str, str]
) -> Iterator[tuple[str, str | None]]:
    """(the API's base URL, its Redis URL) of a ready stack: the running one at `url` (its Redis
    at `redis_url`, if given), or a redis-server and `dlpipe up` of its own on free loopback
    ports (DLPIPE_LOG_LEVEL=WARNING and `settings` over this environment, its files in a fresh
    temporary folder named `prefix`...), both stopped on the way out."""
    if url:
        wait_ready(url, None)
        yield url, redis_url
        return
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    redis_proc, redis_port = start_redis(tmp / "redis")
    proc = None
    try:
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        port = free_port()
        env = {
            **os.environ,
            "DLPIPE_REDIS_URL": redis_url,
            "DLPIPE_PORT": str(port),
            "DLPIPE_LOG_LEVEL": "WARNING",
            **settings,
        }
        with (tmp / "stack.log").open("wb") as log:
            proc = subprocess.Popen(
                [str(Path(sys.executable).with_name("dlpipe")), "up"],
                env=env,
                cwd=REPO,
                start_new_session=True,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        base_url = f"http://127.0.0.1:{port}"
        wait_ready(base_url, proc)
        yield base_url, redis_url
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
        redis_proc.terminate()
        redis_proc.wait(timeout=10)


async def finished_job(client: httpx.AsyncClient, pipeline: str, image_base64: str, poll_s: float) -> dict:
    """Submit a one-image job and poll it every `poll_s` until it ends; the job (an error unless
    it succeeded)."""
    body = {"inputs": [{"image_base64": image_base64}]}
    response = await client.post(f"/v1/pipelines/{pipeline}/jobs", json=body)
    response.raise_for_status()
    job_id = response.json()["id"]
    while (job := (await client.get(f"/v1/jobs/{job_id}")).json())["status"] not in FINAL:
        await asyncio.sleep(poll_s)  # the client's poll interval, not a wait for a condition
    if job["status"] != "succeeded":
        raise RuntimeError(f"job {job_id} ended {job['status']}: {job}")
    return job


async def run_jobs(jobs: int, concurrency: int, one_job: Callable[[int], Awaitable[None]]) -> float:
    """`concurrency` clients, each running `one_job(n)` for the next of 0..jobs-1 until none is
    left; the seconds from the first start to the last end."""
    next_job = iter(range(jobs))

    async def one_client() -> None:
        for n in next_job:
            await one_job(n)

    began = time.perf_counter()
    await asyncio.gather(*(one_client() for _ in range(concurrency)))
    return time.perf_counter() - began
