"""The `dlpipe` command line: its subcommands and flags (build_parser), and the Settings they give
(settings_from_args: DLPIPE_* variables with the flags laid over them). What each subcommand
does is in services/cli.py; the client commands' own flags are services/cli_client's.
"""

from __future__ import annotations

import argparse
from typing import Any

from services import cli_client, deploy_k8s
from shared.settings import Settings

WORKER_KINDS = ("preprocess", "model", "notifier")


def _models_list(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected model names separated by commas, e.g. a,b")
    return names


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"port must be 1-65535, got {value}")
    return value


def _add_listen_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="address the API listens on (DLPIPE_HOST; default 127.0.0.1)")
    parser.add_argument("--port", type=_port, help="port the API listens on (DLPIPE_PORT; default 8000)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dlpipe",
        description="Run deep-learning pipelines: every stage at once, joined by Redis streams.",
        epilog="Settings come from DLPIPE_* environment variables; flags override them.",
    )
    parser.add_argument("--log-level", help="logging level (DLPIPE_LOG_LEVEL; default INFO)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p_up = sub.add_parser(
        "up",
        help="run the API and one of each worker as supervised processes",
        description="Run the API and one of each worker as supervised child processes. Without "
        "DLPIPE_REDIS_URL, an embedded redis-server is started too (data in DLPIPE_DATA_DIR).",
    )
    _add_listen_flags(p_up)

    p_api = sub.add_parser("api", help="run the HTTP API", description="Run the HTTP API (uvicorn).")
    _add_listen_flags(p_api)

    p_worker = sub.add_parser("worker", help="run one worker", description="Run one worker.")
    workers = p_worker.add_subparsers(dest="kind", required=True, metavar="KIND")
    p_pre = workers.add_parser(
        "preprocess", help="CPU stages (preprocess and postprocess)", description="Run CPU stages."
    )
    p_pre.add_argument(
        "--concurrency",
        type=_positive_int,
        help="processes to run (DLPIPE_PREPROCESS_CONCURRENCY; default: a fifth of the cores, at least 1)",
    )
    p_model = workers.add_parser("model", help="batched model inference", description="Run model stages.")
    p_model.add_argument(
        "--models",
        type=_models_list,
        help="serve only these models, comma-separated (default: every model a pipeline uses)",
    )
    p_model.add_argument(
        "--replicas",
        type=_positive_int,
        help="model worker processes (DLPIPE_MODEL_REPLICAS; default: one per core on a CPU, 1 with a GPU)",
    )
    workers.add_parser("notifier", help="webhooks for finished jobs", description="Deliver webhooks.")

    p_check = sub.add_parser(
        "check",
        help="validate the pipelines file",
        description="Validate the pipelines file (DLPIPE_PIPELINES_FILE), import every stage "
        "function and model class it names, and check each model's params as its class does (an "
        "exported model's file is loaded on the CPU and tried on one batch). Exits 1 with the "
        "error if anything is wrong.",
    )
    p_check.add_argument("--pipelines-file", help="file to check (default: DLPIPE_PIPELINES_FILE)")
    p_check.add_argument(
        "--no-import",
        action="store_true",
        help="only locate the modules, without importing them or checking model params (what the API "
        "does; no torch needed)",
    )

    p_health = sub.add_parser(
        "healthcheck",
        help="exit 0 if a service is healthy (for container healthchecks)",
        description="api: GET /healthz on this host's API port. A worker kind: a worker of that "
        "kind on this host has a live heartbeat in Redis.",
    )
    p_health.add_argument("service", choices=("api", *WORKER_KINDS))
    p_health.add_argument("--timeout-s", type=float, default=3.0, help="give up after this long")

    # Its flags belong to the bench package (`dlpipe bench -h`), passed on as they are.
    p_bench = sub.add_parser(
        "bench",
        help="benchmark against the model-only limit, the ceiling and peers (`dlpipe bench -h`)",
        add_help=False,
        prefix_chars="+",
    )
    p_bench.add_argument("bench_args", nargs=argparse.REMAINDER)
    deploy_k8s.add_parser(sub, count=_positive_int)
    cli_client.add_parsers(sub, _positive_int)
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings from the environment, with the flags that were given laid over them."""
    overrides: dict[str, Any] = {}
    for flag, name in (
        ("host", "host"),
        ("port", "port"),
        ("log_level", "log_level"),
        ("pipelines_file", "pipelines_file"),
        ("concurrency", "preprocess_concurrency"),
        ("replicas", "model_replicas"),
    ):
        value = getattr(args, flag, None)
        if value is not None:
            overrides[name] = value
    return Settings(**overrides)
