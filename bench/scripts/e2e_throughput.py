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
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import httpx
import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.photos import fhd_jpegs  # noqa: E402
from bench.scripts import common  # noqa: E402


async def run_clients(
    base_url: str, payloads: list[str], jobs: int, concurrency: int
) -> tuple[list[float], float]:
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:

        async def one_job(n: int) -> None:
            start = time.perf_counter()
            await common.finished_job(client, "image-classify", payloads[n % len(payloads)], poll_s=0.01)
            latencies.append(time.perf_counter() - start)

        return latencies, await common.run_jobs(jobs, concurrency, one_job)


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
    settings = {"DLPIPE_PREPROCESS_CONCURRENCY": str(args.preprocess_concurrency)}
    with common.stack(args.url, args.redis_url, "dlpipe-bench-", settings) as (base_url, redis_url):
        asyncio.run(run_clients(base_url, payloads, args.warmup, min(args.concurrency, args.warmup)))
        r = redis.Redis.from_url(redis_url) if redis_url else None
        before = common.model_counters(r) if r else {}
        latencies, wall_s = asyncio.run(run_clients(base_url, payloads, args.jobs, args.concurrency))
        after = common.model_counters(r) if r else {}
        print(
            json.dumps(
                {
                    "workload": "image-classify, one 1920x1080 JPEG per job",
                    "jobs": args.jobs,
                    "concurrency": args.concurrency,
                    "preprocess_concurrency": args.preprocess_concurrency,
                    "wall_s": round(wall_s, 2),
                    "jobs_per_s": round(args.jobs / wall_s, 2),
                    "latency_ms": common.latency_ms(latencies, (0.5, 0.95, 0.99)),
                    "latency_mean_ms": round(statistics.fmean(latencies) * 1000, 1),
                    "models": common.model_window(before, after, wall_s),
                    "machine": {
                        "cpus": os.cpu_count(),
                        "python": platform.python_version(),
                        "platform": platform.platform(),
                    },
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
