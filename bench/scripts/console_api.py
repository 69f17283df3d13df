"""The console's routes under load; prints one JSON document (numbers only, nothing asserted).

    PYTHONPATH=. .venv/bin/python bench/scripts/console_api.py --jobs 100000 --clients 200

(a) SSE: `clients` event streams on `clients` jobs of `items` items each, served by one `dlpipe
    api` process; a writer ends the items through the real COMPLETE_STAGE (Store.complete, in
    batches) as fast as it can; output events received per second, all clients together.
(b) GET /v1/jobs p50/p99 with `jobs` jobs kept, written with the real code path (queue_new_job in
    bulk, one pipeline per 1000 jobs; 10% of them then ended by COMPLETE_STAGE): first pages,
    filters, and a page deep in the list.
(c) The hot path's cost: an item's COMPLETE_STAGE with and without the job's event stream, and a
    job's write with and without its index entries (ms per item / per job, 100 per round trip).
Starts its own redis-server and API on free loopback ports.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import redis

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from shared import job_index, jobs, keys  # noqa: E402
from shared.embedded_redis import free_port, start_redis  # noqa: E402
from shared.messages import WorkItem, now_ms  # noqa: E402
from shared.pipeline_spec import load_pipelines  # noqa: E402
from tests.support.api import write_pipelines  # noqa: E402
from workers.store import Entry, StageResult, Store  # noqa: E402
from workers.store.results import Results  # noqa: E402


def start_api(folder: Path, redis_url: str, pipelines: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DLPIPE_")}
    env.update(
        DLPIPE_REDIS_URL=redis_url,
        DLPIPE_PORT=str(port),
        DLPIPE_PIPELINES_FILE=str(pipelines),
        DLPIPE_LOG_LEVEL="WARNING",
        PYTHONPATH=str(REPO),
    )
    log = (folder / "api.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "api"], cwd=REPO, env=env, stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("the API did not start")


def result(job_id: str, index: int) -> StageResult:
    item = WorkItem(job_id=job_id, index=index, pipeline="img", stage="post")
    return StageResult(
        Entry(stream=keys.stream("cpu.img.post"), entry_id="0-1", item=item), value={"n": index}
    )


async def sse_client(
    port: int, job_id: str, counts: list[int], slot: int, ready: asyncio.Event, opened: list[int]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"GET /v1/jobs/{job_id}/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n".encode()
    )
    await writer.drain()
    while line := await reader.readline():
        if line.startswith(b"event: progress") and not opened[slot]:
            opened[slot] = 1
            if all(opened):
                ready.set()
        elif line.startswith(b"event: output"):
            counts[slot] += 1
        elif line.startswith(b"event: completed"):
            break
    writer.close()


def bench_sse(redis_url: str, url: str, store: Store, clients: int, items: int) -> dict[str, Any]:
    body = {"inputs": [{"image_base64": "YWJj"}] * items}
    ids = [
        httpx.post(f"{url}/v1/pipelines/img/jobs", json=body, timeout=30).json()["id"] for _ in range(clients)
    ]
    port = int(url.rsplit(":", 1)[1])
    counts, opened = [0] * clients, [0] * clients
    times: dict[str, float] = {}

    def write() -> None:
        batch = 50
        times["start"] = time.perf_counter()
        for index in range(items):
            pending = [result(job_id, index) for job_id in ids]
            for n in range(0, len(pending), batch):
                store.complete("cpu", pending[n : n + batch])
        times["written"] = time.perf_counter()

    async def run() -> None:
        ready = asyncio.Event()
        tasks = [
            asyncio.create_task(sse_client(port, j, counts, i, ready, opened)) for i, j in enumerate(ids)
        ]
        await asyncio.wait_for(ready.wait(), 120)
        writer = threading.Thread(target=write)
        writer.start()
        await asyncio.wait_for(asyncio.gather(*tasks), 600)
        times["received"] = time.perf_counter()
        writer.join()

    asyncio.run(run())
    received = sum(counts)
    wall = times["received"] - times["start"]
    return {
        "clients": clients,
        "jobs": clients,
        "items_per_job": items,
        "output_events_received": received,
        "wall_s": round(wall, 3),
        "output_events_per_s": round(received / wall, 1),
        "items_completed_per_s_by_writer": round(clients * items / (times["written"] - times["start"]), 1),
    }


def write_jobs(client: redis.Redis, store: Store, n: int) -> float:
    pipeline = store.config.pipelines["img"]
    started = time.perf_counter()
    created = now_ms() - n  # one ms apart, oldest first
    for start in range(0, n, 1000):
        pipe = client.pipeline(transaction=False)
        for i in range(start, min(n, start + 1000)):
            jobs.queue_new_job(
                pipe,
                jobs.JobRecord.new(
                    id=f"bulk{i:07d}",
                    pipeline=pipeline.name,
                    total=1,
                    metadata={"i": i},
                    created_ms=created + i,
                ),
                pipeline=pipeline,
                inputs=[{"image": b"abc"}],
                ttl_s=86400,
            )
        pipe.execute()
    ended = [result(f"bulk{i:07d}", 0) for i in range(0, n, 10)]
    for start in range(0, len(ended), 500):
        store.complete("cpu", ended[start : start + 500])
    return time.perf_counter() - started


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 2),
    }


def bench_list(url: str, requests: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with httpx.Client(base_url=url, timeout=30) as http:
        deep = None
        cursor = None
        for _ in range(40):  # 40 pages of 200 in: 8000 jobs deep (or as deep as there are jobs)
            following = http.get(
                "/v1/jobs", params={"limit": 200, **({"cursor": cursor} if cursor else {})}
            ).json()["next_cursor"]
            if following is None:
                break
            cursor = following
        deep = cursor
        cases = {
            "first_page_50": {},
            "status_succeeded_50": {"status": "succeeded"},
            "status_queued_pipeline_50": {"status": "queued", "pipeline": "img"},
            "limit_200": {"limit": 200},
            **({"deep_cursor_50": {"cursor": deep}} if deep else {}),
        }
        for name, params in cases.items():
            samples = []
            for _ in range(requests):
                started = time.perf_counter()
                response = http.get("/v1/jobs", params=params)
                samples.append(time.perf_counter() - started)
                assert response.status_code == 200, response.text
            out[name] = percentiles(samples)
    return out


def bench_hot_path(client: redis.Redis, store: Store, n: int) -> dict[str, Any]:
    pipeline = store.config.pipelines["img"]
    out: dict[str, Any] = {}
    for label, index_on in (("with_index", True), ("without_index", False)):
        original = job_index.index_new_job
        if not index_on:
            jobs.index_new_job = lambda *a, **k: {}  # type: ignore[assignment]
        started = time.perf_counter()
        for start in range(0, n, 100):  # 100 jobs per round trip: Redis's work, not the round trips
            pipe = client.pipeline(transaction=True)
            for i in range(start, min(n, start + 100)):
                jobs.queue_new_job(
                    pipe,
                    jobs.JobRecord.new(
                        id=f"hot{label}{i}", pipeline=pipeline.name, total=1, created_ms=now_ms()
                    ),
                    pipeline=pipeline,
                    inputs=[{"image": b"abc"}],
                    ttl_s=3600,
                )
            pipe.execute()
        out[f"job_write_ms_{label}"] = round((time.perf_counter() - started) / n * 1000, 4)
        jobs.index_new_job = original  # type: ignore[assignment]
    for label, events_on in (("with_events", True), ("without_events", False)):
        ids = [f"hot{'with_index' if events_on else 'without_index'}{i}" for i in range(n)]
        if not events_on:
            store.results.complete_one = _without_events(store)  # type: ignore[method-assign]
        started = time.perf_counter()
        for start in range(0, n, 100):
            store.complete("cpu", [result(job_id, 0) for job_id in ids[start : start + 100]])
        out[f"item_complete_ms_{label}"] = round((time.perf_counter() - started) / n * 1000, 4)
    return out


def _without_events(store: Store) -> Any:
    """Results.complete_one minus the job's event stream key (COMPLETE_STAGE then writes none)."""
    original = Results.complete_one

    def complete_one(pipe: Any, group: str, result: StageResult, stamp: int) -> None:
        real = pipe.script

        def script(s: Any, keys_: list[str], args: list[Any]) -> None:
            real(s, [k for k in keys_ if not (k.startswith(keys.job("")) and k.endswith(":events"))], args)

        pipe.script = script
        original(store.results, pipe, group, result, stamp)
        pipe.script = real

    return complete_one


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--items", type=int, default=20)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--hot", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        proc, port = start_redis(folder)
        redis_url = f"redis://127.0.0.1:{port}/0"
        client = redis.Redis.from_url(redis_url)
        pipelines = write_pipelines(folder)
        store = Store(client, load_pipelines(pipelines), ttl_s=3600)
        api, url = start_api(folder, redis_url, pipelines)
        try:
            report: dict[str, Any] = {"sse": bench_sse(redis_url, url, store, args.clients, args.items)}
            report["hot_path"] = bench_hot_path(client, store, args.hot)
            client.flushall()
            before = int(client.info("memory")["used_memory"])
            report["write_jobs_s"] = round(write_jobs(client, store, args.jobs), 1)
            report["bytes_per_job_kept"] = (int(client.info("memory")["used_memory"]) - before) // args.jobs
            report["jobs_kept"] = args.jobs
            report["list"] = bench_list(url, args.requests)
        finally:
            api.terminate()
            api.wait(30)
            proc.terminate()
            proc.wait(30)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
