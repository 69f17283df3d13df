"""Ray Serve serving the same pipelines with @serve.batch: one deployment (`--workers` replicas) behind
Serve's HTTP proxy; each request is read and preprocessed in the replica, then joins a batch of
its pipeline (max_batch_size, batch_wait_timeout_s as given). Runs in the ray peer's virtualenv,
with the repository on PYTHONPATH; a local Ray with `num_cpus` = cores, no dashboard.

    python -m bench.servers.ray_app --port 8103 --pipelines image-classify,image-tag
"""

# No `from __future__ import annotations`: Ray pickles the deployment class by value, and FastAPI
# must find real types in its endpoints' annotations (`request: Request`), not names to look up.
import logging
import os
import signal
import threading
from typing import Any

# FastAPI resolves the endpoints' annotations (`request: Request`) in this module's globals.
from fastapi import FastAPI, HTTPException, Request

from bench.servers.common import parse_args, setup_logging

log = logging.getLogger("bench.ray")

# @serve.batch takes its sizes when the class is defined: the launcher passes them through here.
MAX_BATCH = int(os.environ.get("BENCH_RAY_MAX_BATCH", "4"))
BATCH_WAIT_S = float(os.environ.get("BENCH_RAY_BATCH_WAIT_S", "0.002"))


def build_deployment(args: Any) -> Any:
    from ray import serve  # noqa: PLC0415

    from bench.runner import Item  # noqa: PLC0415
    from bench.servers.common import answer, decode, load_runners  # noqa: PLC0415

    app = FastAPI(title="dlpipe bench: Ray Serve")

    @serve.deployment(num_replicas=args.workers, max_ongoing_requests=256)
    @serve.ingress(app)
    class Pipelines:
        def __init__(self, args: Any) -> None:
            setup_logging()
            self.runners = load_runners(args)

        @serve.batch(max_batch_size=MAX_BATCH, batch_wait_timeout_s=BATCH_WAIT_S)
        async def run_batch(self, jobs: list[tuple[str, Item]]) -> list[Item]:
            for name in {n for n, _ in jobs}:
                self.runners[name].finish([item for n, item in jobs if n == name])
            return [item for _, item in jobs]

        @app.get("/healthz")
        async def healthz(self) -> dict:
            return {"ok": True}

        @app.post("/v1/pipelines/{name}/jobs")
        async def submit(self, name: str, request: Request) -> dict:
            runner = self.runners.get(name)
            if runner is None:
                raise HTTPException(404, f"no pipeline {name!r}")
            item = decode(runner, await request.json())
            item = await self.run_batch((name, item))
            return answer(runner, item)

    return Pipelines.bind(args)  # type: ignore[attr-defined]  # serve.deployment's class


def main(argv: list[str] | None = None) -> None:
    setup_logging()
    args = parse_args(__doc__ or "", argv)
    import ray  # noqa: PLC0415
    from ray import serve  # noqa: PLC0415

    ray.init(
        num_cpus=os.cpu_count() or 1,
        include_dashboard=False,
        object_store_memory=256 * 1024 * 1024,
        log_to_driver=False,
    )
    serve.start(http_options={"host": args.host, "port": args.port})
    serve.run(build_deployment(args), route_prefix="/", blocking=False)
    log.info("ray serve ready on %s:%d", args.host, args.port)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    log.info("stopping ray")  # not serve.shutdown(): it can hang; the bench stops every process by pid too
    ray.shutdown()


if __name__ == "__main__":
    main()
