"""Priorities on the simulated device: a high job's latency while a saturating low backlog waits,
against the same on an idle stack, and the low throughput that still flows.

    PYTHONPATH=$PWD .venv/bin/python bench/scripts/priorities.py [--scale 16] [--backlog 400] [--probes 8]

A redis-server of its own, one preprocess process and one model worker (as on a GPU box: one
process owns the device) on the sim bench's device (bench/sim: `sim-classify`, decode -> the
simulated classifier, a + b*n device-ms a batch, top 5 fused into the model worker). Jobs are
queued straight into Redis (shared/jobs.py, as the API's writer does), so what is measured is the
workers' scheduling, not HTTP; a job's latency is its record's completed_at - created_at.

1. idle: `--probes` high jobs of one item, one after the other (a random pause between them: they
   arrive anywhere in a batch), on the idle stack;
2. loaded: a low job of `--backlog` items (more than the device drains meanwhile), then, with the
   device saturated, the same probes; the low job's items finished per second before the probes
   (alone) and while they ran;
3. (`--fifo-probe`) one probe at low priority, behind the backlog: what it waits without priority.

Prints one line per phase and a JSON summary. The machine may be shared: compare within a run.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import redis  # noqa: E402

from bench.sim import pipelines as simpipes  # noqa: E402
from shared import keys  # noqa: E402
from shared.embedded_redis import start_redis  # noqa: E402
from shared.job_record import JobRecord
from shared.jobs import queue_new_job  # noqa: E402
from shared.messages import now_ms  # noqa: E402
from shared.pipeline_spec import PipelineSpec, load_pipelines  # noqa: E402
from shared.priority import Priority  # noqa: E402

PIPELINE = "sim-classify"
FINAL = (b"succeeded", b"failed", b"canceled")


def small_jpeg() -> bytes:
    """A 320x240 JPEG (decoding is not what is measured)."""
    from PIL import Image  # noqa: PLC0415

    img = Image.new("RGB", (320, 240))
    img.putdata([((x * 3) % 256, (y * 5) % 256, (x + y) % 256) for y in range(240) for x in range(320)])
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    return buf.getvalue()


class Stack:
    def __init__(self, folder: Path, scale: float) -> None:
        self.spec = simpipes.SimSpec.published(scale=scale)
        self.redis_proc, port = start_redis(folder / "redis")
        self.url = f"redis://127.0.0.1:{port}/0"
        self.client = redis.Redis.from_url(self.url)
        path = simpipes.write(self.spec, folder / "sim")
        self.pipeline: PipelineSpec = load_pipelines(path).pipelines[PIPELINE]
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "DLPIPE_REDIS_URL": self.url,
            "DLPIPE_PIPELINES_FILE": str(path),
            "DLPIPE_DEVICE": "cpu",
            "DLPIPE_MODEL_REPLICAS": "1",
            "DLPIPE_TORCH_THREADS": "1",
            "DLPIPE_LOG_LEVEL": "WARNING",
            "DLPIPE_READ_BLOCK_MS": "200",
        }
        logs = open(folder / "workers.log", "wb")  # noqa: SIM115 - closed with the stack
        self.logs = logs
        self.procs = [
            subprocess.Popen(
                [sys.executable, "-m", "workers.preprocess", "--concurrency", "1"],
                env=env,
                stdout=logs,
                stderr=logs,
            ),
            subprocess.Popen(
                [sys.executable, "-m", "workers.model_main", "--models", simpipes.CLASSIFIER],
                env=env,
                stdout=logs,
                stderr=logs,
            ),
        ]
        deadline = time.monotonic() + 120
        while self.client.zcard(keys.WORKERS) < 2:
            if time.monotonic() > deadline or any(p.poll() is not None for p in self.procs):
                raise SystemExit(f"the workers did not start: see {folder / 'workers.log'}")
            time.sleep(0.05)

    def queue(self, job_id: str, inputs: list[dict[str, Any]], priority: Priority) -> None:
        pipe = self.client.pipeline()
        queue_new_job(
            pipe,
            JobRecord.new(
                id=job_id,
                pipeline=self.pipeline.name,
                total=len(inputs),
                created_ms=now_ms(),
                priority=priority,
            ),
            pipeline=self.pipeline,
            inputs=inputs,
            ttl_s=3600,
        )
        pipe.execute()

    def wait(self, job_id: str, timeout_s: float = 300) -> float:
        """The job's latency (ms), once it has ended."""
        deadline = time.monotonic() + timeout_s
        while self.client.hget(keys.job(job_id), "status") not in FINAL:
            if time.monotonic() > deadline:
                raise SystemExit(f"job {job_id} did not end in {timeout_s} s")
            time.sleep(0.003)
        created, completed = self.client.hmget(keys.job(job_id), "created_at", "completed_at")
        return float(int(completed) - int(created))

    def done(self, job_id: str) -> int:
        return int(self.client.hget(keys.job(job_id), "done") or 0)

    def close(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.client.close()
        self.redis_proc.terminate()
        self.redis_proc.wait(timeout=10)
        self.logs.close()


def probes(stack: Stack, name: str, n: int, image: bytes, seed: int = 0) -> list[float]:
    """`n` high jobs of one item, one at a time, each after a random pause (up to one full batch's
    device time), so that they arrive at any point of a batch, as independent jobs do, not just as
    one ends (when the previous probe finished)."""
    pause = random.Random(seed)
    batch_s = stack.spec.costs[simpipes.CLASSIFIER].ms(stack.spec.max_batch_size) / 1000.0
    out = []
    for i in range(n):
        time.sleep(pause.uniform(0.0, batch_s))
        job_id = f"{name}-{i}"
        stack.queue(job_id, [{"image": image}], Priority.high)
        out.append(stack.wait(job_id))
    return out


def summary(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "p50_ms": round(statistics.median(ordered), 1),
        "mean_ms": round(statistics.fmean(ordered), 1),
        "max_ms": round(ordered[-1], 1),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    image = small_jpeg()
    with tempfile.TemporaryDirectory(prefix="dlpipe-prio-") as tmp:
        stack = Stack(Path(tmp), args.scale)
        try:
            stack.queue("warm", [{"image": image}] * 32, Priority.normal)  # the cost curve is learnt
            stack.wait("warm")
            idle = probes(stack, "idle", args.probes, image)
            print(f"idle stack: high job latency {summary(idle)}", flush=True)
            stack.queue("low", [{"image": image}] * args.backlog, Priority.low)
            time.sleep(args.settle_s)  # the device saturated: batches back to back
            t0, d0 = time.monotonic(), stack.done("low")
            time.sleep(args.settle_s)
            t1, d1 = time.monotonic(), stack.done("low")
            alone = (d1 - d0) / (t1 - t0)
            loaded = probes(stack, "loaded", args.probes, image)
            t2, d2 = time.monotonic(), stack.done("low")
            during = (d2 - d1) / (t2 - t1)
            left = args.backlog - d2
            ceiling = stack.spec.ceiling_items_per_s(PIPELINE)
            print(
                f"low backlog of {args.backlog}: {left} still waiting after the probes "
                f"({'saturated throughout' if left > 0 else 'NOT saturated: raise --backlog'})"
            )
            print(
                f"loaded stack: high job latency {summary(loaded)}; "
                f"p50 {statistics.median(loaded) / statistics.median(idle):.2f}x the idle stack's"
            )
            print(
                f"low throughput: {alone:.1f} items/s alone, {during:.1f} items/s beside the high "
                f"probes (device ceiling {ceiling:.1f} items/s)"
            )
            result: dict[str, Any] = {
                "scale": args.scale,
                "backlog": args.backlog,
                "probes": args.probes,
                "idle": summary(idle),
                "loaded": summary(loaded),
                "p50_ratio": round(statistics.median(loaded) / statistics.median(idle), 2),
                "low_items_per_s_alone": round(alone, 2),
                "low_items_per_s_during_probes": round(during, 2),
                "ceiling_items_per_s": round(ceiling, 2),
                "backlog_left": left,
            }
            if args.fifo_probe and left > 0:
                stack.queue("fifo", [{"image": image}], Priority.low)
                fifo = stack.wait("fifo")
                print(f"the same probe at low priority (behind the backlog): {fifo:.0f} ms")
                result["low_probe_ms"] = fifo
            return result
        finally:
            stack.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--scale", type=float, default=simpipes.DEFAULT_SCALE, help="the sim device's slowdown"
    )
    parser.add_argument("--backlog", type=int, default=400, help="items of the low job")
    parser.add_argument("--probes", type=int, default=8, help="high jobs per phase")
    parser.add_argument(
        "--settle-s", type=float, default=3.0, help="seconds to saturate, then to measure low alone"
    )
    parser.add_argument(
        "--fifo-probe", action="store_true", help="also time one low probe behind the backlog"
    )
    result = run(parser.parse_args(argv))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
