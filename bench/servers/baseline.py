"""The classical baseline: one process reads a request, preprocesses, predicts and
postprocesses it, in turn, then takes the next (an `async def` endpoint that computes on the
event loop: no two requests overlap). Plain FastAPI on uvicorn, 1 worker, torch threads = cores.

    python -m bench.servers.baseline --port 8101 --pipelines image-classify,image-tag
"""

from __future__ import annotations

import logging

import uvicorn
from fastapi import FastAPI, HTTPException, Request

from bench.servers.common import answer, decode, load_runners, parse_args, setup_logging

log = logging.getLogger("bench.baseline")


def build_app(runners: dict) -> FastAPI:
    app = FastAPI(title="dlpipe bench: classical baseline")

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"ok": True}

    @app.post("/v1/pipelines/{name}/jobs")
    async def submit(name: str, request: Request) -> dict:
        runner = runners.get(name)
        if runner is None:
            raise HTTPException(404, f"no pipeline {name!r}")
        item = decode(runner, await request.json())  # read + preprocess
        runner.finish([item])  # predict + postprocess
        return answer(runner, item)

    return app


def main(argv: list[str] | None = None) -> None:
    setup_logging()
    args = parse_args(__doc__ or "", argv)
    app = build_app(load_runners(args))
    uvicorn.run(app, host=args.host, port=args.port, workers=1, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
