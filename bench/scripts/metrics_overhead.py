"""What the metrics cost a worker per item: the observing in Python, and the extra work in the
write a worker makes anyway (Store.complete: the tally's HINCRBYs in its pipeline, the item and
job counts in COMPLETE_STAGE).

    .venv/bin/python bench/scripts/metrics_overhead.py --rounds 400 --batch 8

Starts its own redis-server (loopback, free port). Python: a preprocess step of `batch`
entries (waited, a timed stage each, take) and a model batch (waited, forward, take), timed
over many loops. Redis: `rounds` jobs of `batch` items each, every item's final result
recorded by one Store.complete call, alternately without metrics (the COMPLETE_STAGE keys of
before, no counters) and with them (keys.METRICS passed, a tally of that step's waits and
stage times, spread over several buckets); the median of each, per call and per item.
Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from shared import keys  # noqa: E402
from shared.embedded_redis import start_redis  # noqa: E402
from shared.job_record import JobRecord
from shared.jobs import queue_new_job  # noqa: E402
from shared.messages import WorkItem, now_ms  # noqa: E402
from shared.pipeline_spec import parse_pipelines  # noqa: E402
from workers.metrics import StageMetrics  # noqa: E402
from workers.store import Entry, StageResult, Store  # noqa: E402

CONFIG = {
    "pipelines": {
        "p": {
            "input": "image",
            "stages": [
                {"name": "prep", "kind": "preprocess", "fn": "m:f"},
                {"name": "post", "kind": "postprocess", "fn": "m:g"},
            ],
        }
    }
}


def entries(job_id: str, batch: int, stage: str, base_ms: int) -> list[Entry]:
    rng = random.Random(job_id)
    return [
        Entry(
            stream=keys.stream(f"cpu.p.{stage}"),
            entry_id=f"{base_ms - int(10 ** rng.uniform(0, 3))}-{i}",  # waited 1 ms .. 1 s
            item=WorkItem(job_id=job_id, index=i, pipeline="p", stage=stage),
        )
        for i in range(batch)
    ]


def python_cost(batch: int, loops: int) -> dict[str, float]:
    """Microseconds per item of the worker-side calls, for a CPU step and a model batch."""
    metrics = StageMetrics()
    batch_entries = entries("py", batch, "prep", now_ms())
    results = [StageResult(e, value=1) for e in batch_entries]

    def stage(entry: Entry, values: Any) -> StageResult:
        return results[entry.item.index]

    started = time.perf_counter()
    for _ in range(loops):
        metrics.waited(batch_entries)
        for entry in batch_entries:
            metrics.timed(stage, entry, None)
        metrics.take()
    cpu_us = (time.perf_counter() - started) / loops / batch * 1e6
    started = time.perf_counter()
    for _ in range(loops):
        metrics.waited(batch_entries)
        metrics.forward("m", results, 0.01)
        metrics.take()
    model_us = (time.perf_counter() - started) / loops / batch * 1e6
    return {"cpu_step_us_per_item": round(cpu_us, 2), "model_batch_us_per_item": round(model_us, 2)}


class WithoutMetrics(Store):
    """Store.complete as it was before metrics: no keys.METRICS for COMPLETE_STAGE, no counters."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        original = self.results.complete_one

        def complete_one(pipe: Any, group: str, result: StageResult, stamp: int) -> None:
            real = pipe.script

            def script(s: Any, keys_: list[str], args: list[Any]) -> None:
                # the optional keys are positional: those after keys.METRICS go too
                real(s, keys_[: keys_.index(METRICS_KEY)] if METRICS_KEY in keys_ else keys_, args)

            pipe.script = script
            original(pipe, group, result, stamp)
            pipe.script = real

        self.results.complete_one = complete_one  # type: ignore[method-assign]


METRICS_KEY = keys.METRICS


def redis_cost(client: redis.Redis, rounds: int, batch: int) -> dict[str, Any]:
    config = parse_pipelines(CONFIG)
    plain, measured = WithoutMetrics(client, config, 3600), Store(client, config, 3600)
    times: dict[str, list[float]] = {"without": [], "with": []}
    for n in range(rounds):
        for variant in ("without", "with") if n % 2 else ("with", "without"):
            job_id = f"{variant}-{n}"
            pipe = client.pipeline()
            queue_new_job(
                pipe,
                JobRecord.new(
                    id=job_id, pipeline=config.pipelines["p"].name, total=batch, created_ms=now_ms()
                ),
                pipeline=config.pipelines["p"],
                inputs=[{"v": i} for i in range(batch)],
                ttl_s=3600,
            )
            pipe.execute()
            results = [StageResult(e, value={"v": 1}) for e in entries(job_id, batch, "post", now_ms())]
            if variant == "with":
                metrics = StageMetrics()
                metrics.waited([r.entry for r in results])
                for result in results:
                    metrics.timed(lambda entry, _v, r=result: r, result.entry, None)
                started = time.perf_counter()
                replies = measured.complete(keys.CPU_GROUP, results, metrics.take())
            else:
                started = time.perf_counter()
                replies = plain.complete(keys.CPU_GROUP, results)
            times[variant].append(time.perf_counter() - started)
            assert replies[-1] == 3, replies  # the job finished: every item was recorded
    out: dict[str, Any] = {}
    for variant, values in times.items():
        median_us = statistics.median(values) * 1e6
        out[f"complete_{variant}_metrics_us"] = round(median_us, 1)
        out[f"complete_{variant}_metrics_us_per_item"] = round(median_us / batch, 2)
    extra = out["complete_with_metrics_us"] - out["complete_without_metrics_us"]
    out["complete_extra_us_per_item"] = round(extra / batch, 2)
    fields = client.hlen(keys.METRICS)
    out["metrics_hash_fields"] = fields
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=400, help="jobs per variant")
    parser.add_argument("--batch", type=int, default=8, help="items per step (preprocess READ_COUNT is 8)")
    parser.add_argument("--loops", type=int, default=20000, help="loops of the Python-side timing")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dlpipe-metrics-bench-") as tmp:
        server, port = start_redis(Path(tmp))
        client = redis.Redis(port=port)
        try:
            report = {
                "machine": platform.platform(),
                "python": platform.python_version(),
                "batch": args.batch,
                "rounds": args.rounds,
                **python_cost(args.batch, args.loops),
                **redis_cost(client, args.rounds, args.batch),
            }
        finally:
            client.close()
            server.terminate()
            server.wait(timeout=10)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
