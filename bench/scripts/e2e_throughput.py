"""End-to-end throughput of the whole stack through HTTP: jobs/s, latency, model batch sizes.

    .venv/bin/python bench/scripts/e2e_throughput.py --jobs 300 --concurrency 16

Starts its own redis-server and `dlpipe up` on free loopback ports (or measures a running
stack with --url and --redis-url), submits single-image jobs of 1920x1080 JPEG photos from
`concurrency` clients, each polling its job until final, and prints one JSON document:
jobs/s from the first submit to the last completion, submit-to-final latency percentiles,
and the model worker's batch counters read from Redis over the measured window.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import redis
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from shared import keys  # noqa: E402
from shared.embedded_redis import free_port, start_redis  # noqa: E402

PHOTOS = ["chelsea.png", "coffee.png", "astronaut.png", "motorcycle_left.png", "rocket.jpg"]


def fhd_jpegs() -> list[bytes]:
    """Real photos (scikit-image's bundled ones) upscaled to 1920x1080 JPEG, quality 90."""
    import skimage  # noqa: PLC0415 - dev dependency, only the bench needs it

    data = Path(skimage.__file__).parent / "data"
    out = []
    for name in PHOTOS:
        with Image.open(data / name) as img:
            buf = io.BytesIO()
            img.convert("RGB").resize((1920, 1080), Image.Resampling.BICUBIC).save(buf, "JPEG", quality=90)
            out.append(buf.getvalue())
    return out


def model_counters(client: redis.Redis) -> dict[str, dict[str, float]]:
    counters = {}
    for key in client.scan_iter(match=keys.model_stats("*")):
        name = key.decode().rsplit(":", 1)[1]
        counters[name] = {k.decode(): float(v) for k, v in client.hgetall(key).items()}
    return counters


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def run_clients(
    base_url: str, payloads: list[str], jobs: int, concurrency: int
) -> tuple[list[float], float]:
    latencies: list[float] = []
    next_job = iter(range(jobs))
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:

        async def one_client() -> None:
            for n in next_job:
                body = {"inputs": [{"image_base64": payloads[n % len(payloads)]}]}
                start = time.perf_counter()
                response = await client.post("/v1/pipelines/image-classify/jobs", json=body)
                response.raise_for_status()
                job_id = response.json()["id"]
                while True:
                    job = (await client.get(f"/v1/jobs/{job_id}")).json()
                    if job["status"] in ("succeeded", "failed", "canceled"):
                        break
                    await asyncio.sleep(0.01)  # the client's poll interval, not a wait for a condition
                if job["status"] != "succeeded":
                    raise RuntimeError(f"job {job_id} ended {job['status']}: {job}")
                latencies.append(time.perf_counter() - start)

        began = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(concurrency)))
        return latencies, time.perf_counter() - began


def wait_ready(base_url: str, proc: subprocess.Popen | None, timeout_s: float = 180) -> None:
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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--url", help="measure a running stack instead of starting one")
    parser.add_argument("--redis-url", help="its Redis (for the model worker's batch counters)")
    parser.add_argument("--preprocess-concurrency", type=int, default=1)
    args = parser.parse_args()

    payloads = [base64.b64encode(x).decode() for x in fhd_jpegs()]
    tmp = Path(tempfile.mkdtemp(prefix="dlpipe-bench-"))
    redis_proc = stack = None
    try:
        if args.url:
            base_url, redis_url = args.url, args.redis_url
        else:
            redis_proc, redis_port = start_redis(tmp / "redis")
            redis_url = f"redis://127.0.0.1:{redis_port}/0"
            port = free_port()
            env = {
                **os.environ,
                "DLPIPE_REDIS_URL": redis_url,
                "DLPIPE_PORT": str(port),
                "DLPIPE_PREPROCESS_CONCURRENCY": str(args.preprocess_concurrency),
                "DLPIPE_LOG_LEVEL": "WARNING",
            }
            dlpipe = Path(sys.executable).with_name("dlpipe")
            stack = subprocess.Popen(
                [str(dlpipe), "up"],
                env=env,
                cwd=REPO,
                start_new_session=True,
                stdout=(tmp / "stack.log").open("wb"),
                stderr=subprocess.STDOUT,
            )
            base_url = f"http://127.0.0.1:{port}"
        wait_ready(base_url, stack)
        asyncio.run(run_clients(base_url, payloads, args.warmup, min(args.concurrency, args.warmup)))
        r = redis.Redis.from_url(redis_url) if redis_url else None
        before = model_counters(r) if r else {}
        latencies, wall_s = asyncio.run(run_clients(base_url, payloads, args.jobs, args.concurrency))
        after = model_counters(r) if r else {}
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
        print(
            json.dumps(
                {
                    "workload": "image-classify, one 1920x1080 JPEG per job",
                    "jobs": args.jobs,
                    "concurrency": args.concurrency,
                    "preprocess_concurrency": args.preprocess_concurrency,
                    "wall_s": round(wall_s, 2),
                    "jobs_per_s": round(args.jobs / wall_s, 2),
                    "latency_ms": {
                        q: round(percentile(latencies, p) * 1000, 1)
                        for q, p in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))
                    },
                    "latency_mean_ms": round(statistics.fmean(latencies) * 1000, 1),
                    "models": models,
                    "machine": {
                        "cpus": os.cpu_count(),
                        "python": platform.python_version(),
                        "platform": platform.platform(),
                    },
                },
                indent=2,
            )
        )
    finally:
        if stack is not None:
            stack.send_signal(signal.SIGTERM)
            stack.wait(timeout=60)
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait(timeout=10)


if __name__ == "__main__":
    main()
