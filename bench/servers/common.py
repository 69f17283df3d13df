"""What the bench's servers share: their flags, the runners, and the answer they send."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

from bench.photos import image_from_body
from bench.runner import Item, PipelineRunner


def parse_args(description: str, argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--pipelines", default="image-classify", help="comma-separated pipeline names")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch intra-op threads")
    parser.add_argument("--stats-dir", type=Path, help="write each pipeline's model counters here")
    parser.add_argument("--max-batch-size", type=int, default=4, help="batching servers: largest batch")
    parser.add_argument("--batch-timeout-ms", type=float, default=2.0, help="batching servers: longest wait")
    parser.add_argument(
        "--pipelines-file", type=Path, help="the pipelines file (default: dlpipe's bundled one)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="LitServe: workers_per_device; Ray Serve: replicas (processes running the model)",
    )
    args = parser.parse_args(argv)
    args.pipelines = [name.strip() for name in args.pipelines.split(",") if name.strip()]
    return args


def setup_logging() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"
    )


def load_runners(args: argparse.Namespace) -> dict[str, PipelineRunner]:
    runners = {}
    for name in args.pipelines:
        # One file per process: LitServe's workers and Ray's replicas each count their own.
        stats = args.stats_dir / f"{name}.{os.getpid()}.json" if args.stats_dir else None
        runners[name] = PipelineRunner(
            name, pipelines_file=args.pipelines_file, torch_threads=args.threads, stats_file=stats
        ).load()
    return runners


def decode(runner: PipelineRunner, body: Any) -> Item:
    """A request body -> the item after its leading CPU stages (an unreadable body fails the item)."""
    try:
        image = image_from_body(body)
    except ValueError as exc:
        return Item(values={}, error=str(exc))
    return runner.prepare({"image": image})


def answer(runner: PipelineRunner, item: Item) -> dict[str, Any]:
    """The job's outputs, as dlpipe shows them once final."""
    if item.error is not None:
        output = {"index": 0, "status": "failed", "result": None, "error": item.error}
    else:
        output = {"index": 0, "status": "succeeded", "result": runner.result(item), "error": None}
    return {"status": output["status"], "outputs": [output]}
