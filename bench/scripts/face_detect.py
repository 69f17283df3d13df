"""face-detect end to end through a real `dlpipe up`: jobs/s, each model's batch sizes, time per stage.

    .venv/bin/python bench/scripts/face_detect.py --jobs 60 --concurrency 8
    .venv/bin/python bench/scripts/face_detect.py --pipeline face-blur   # and GET each blurred JPEG

Starts its own redis-server and `dlpipe up` (the bundled pipelines file) on free loopback ports,
or measures a running stack (--url, --redis-url). Clients submit single-photo face-detect jobs
(scikit-image's bundled photos at their own sizes, 300x451 to 512x741: the astronaut, the cat,
the espresso cup, the rocket, the motorcycle) and poll each to its end. Prints one JSON document:
jobs/s from the first submit to the last completion, latency percentiles, per model the forward
passes and items in the window (keys.model_stats: mean items per batch), and per stage the mean
time an item spent in it (dlpipe_stage_seconds from the API's /metrics: the stage function's
time on one single-threaded process, for a model stage its share of the batch's forward pass),
all over the measured window only (the warm-up's jobs are subtracted).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import sys
import time
from pathlib import Path

import httpx
import redis
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench.scripts import common  # noqa: E402

PHOTOS = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png"]
PIPELINES = ("face-detect", "face-blur")  # face-blur: the cascade, the blur, the JPEG fetched too


def photos() -> list[str]:
    import skimage  # noqa: PLC0415 - dev dependency, only the bench needs it

    data = Path(skimage.__file__).parent / "data"
    return [base64.b64encode((data / name).read_bytes()).decode() for name in PHOTOS]


def stage_times(base_url: str, pipeline: str) -> dict[str, tuple[float, float]]:
    """Stage -> (seconds, items) of the pipeline's dlpipe_stage_seconds, as /metrics has them now."""
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    out: dict[str, list[float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "dlpipe_stage_seconds":
            continue
        for sample in family.samples:
            if sample.labels.get("pipeline") != pipeline:
                continue
            slot = out.setdefault(sample.labels["stage"], [0.0, 0.0])
            if sample.name.endswith("_sum"):
                slot[0] = sample.value
            elif sample.name.endswith("_count"):
                slot[1] = sample.value
    return {stage: (s, n) for stage, (s, n) in out.items()}


async def run_clients(
    base_url: str, pipeline: str, payloads: list[str], jobs: int, concurrency: int
) -> tuple[list[float], float, dict]:
    latencies: list[float] = []
    faces: dict[int, int] = {}
    async with httpx.AsyncClient(base_url=base_url, timeout=120) as client:

        async def one_job(n: int) -> None:
            start = time.perf_counter()
            job = await common.finished_job(client, pipeline, payloads[n % len(payloads)], poll_s=0.02)
            result = job["outputs"][0]["result"]
            faces[n % len(payloads)] = len(result["faces"])
            for described in result.get("files", []):  # face-blur: the JPEG, as a client gets it
                (await client.get(described["url"])).raise_for_status()
            latencies.append(time.perf_counter() - start)

        wall_s = await common.run_jobs(jobs, concurrency, one_job)
        return latencies, wall_s, {PHOTOS[i]: n for i, n in sorted(faces.items())}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pipeline", choices=PIPELINES, default=PIPELINES[0])
    parser.add_argument("--jobs", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--url", help="measure a running stack instead of starting one")
    parser.add_argument("--redis-url", help="its Redis (for the models' batch counters)")
    args = parser.parse_args()

    payloads = photos()
    with common.stack(args.url, args.redis_url, "dlpipe-faces-", {}) as (base_url, redis_url):
        asyncio.run(
            run_clients(base_url, args.pipeline, payloads, args.warmup, min(args.concurrency, args.warmup))
        )
        r = redis.Redis.from_url(redis_url) if redis_url else None
        before, stages_before = (common.model_counters(r) if r else {}), stage_times(base_url, args.pipeline)
        latencies, wall_s, faces = asyncio.run(
            run_clients(base_url, args.pipeline, payloads, args.jobs, args.concurrency)
        )
        after, stages_after = (common.model_counters(r) if r else {}), stage_times(base_url, args.pipeline)
        models = {
            n: m for n, m in common.model_window(before, after, wall_s).items() if n.startswith("mtcnn")
        }
        stages = {}
        for stage, (seconds, items) in stages_after.items():
            s0, n0 = stages_before.get(stage, (0.0, 0.0))
            if items - n0:
                stages[stage] = round((seconds - s0) / (items - n0) * 1000, 2)
        print(
            json.dumps(
                {
                    "workload": f"{args.pipeline}, one photo per job ({', '.join(PHOTOS)}, in turn)",
                    "jobs": args.jobs,
                    "concurrency": args.concurrency,
                    "wall_s": round(wall_s, 2),
                    "jobs_per_s": round(args.jobs / wall_s, 2),
                    "latency_ms": common.latency_ms(latencies, (0.5, 0.95)),
                    "faces_per_photo": faces,
                    "models": models,
                    "stage_ms_per_item": stages,
                    "cpu_ms_per_job": round(sum(stages.values()), 1),
                    "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
