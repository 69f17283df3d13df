"""The `dlpipe` command: run the stack, one service, or check the pipelines file.

    dlpipe up                                  API + one of each worker (+ embedded Redis if needed)
    dlpipe api [--host H] [--port P]           the HTTP API (uvicorn)
    dlpipe worker preprocess [--concurrency N] CPU stages (preprocess, postprocess)
    dlpipe worker model [--models a,b] [--replicas N]  batched model inference
    dlpipe worker notifier                     webhooks for finished jobs
    dlpipe check [--no-import]                 validate the pipelines file
    dlpipe healthcheck api|preprocess|model|notifier   for container healthchecks
    dlpipe bench [flags]                       benchmark against the limit, the ceiling, peers (-h)
    dlpipe deploy k8s [--overlay cpu|gpu] [--out DIR]  Kubernetes: KEDA ScaledObjects, a kustomization
    dlpipe submit PIPELINE PATH... [--out F]   files and folders through a pipeline (resumable)
    dlpipe jobs | job ID [--watch] | cancel ID  jobs of the API (services/cli_client/)

Settings come from DLPIPE_* variables (see README); flags override them. Settings are built
once, here, and passed down. The API and worker modules are imported only inside their
subcommand, so `dlpipe api` never imports torch.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from services import cli_client, deploy_k8s
from shared.logs import setup_logging
from shared.settings import Settings

log = logging.getLogger("dlpipe")

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


def _role(args: argparse.Namespace) -> str:
    return args.kind if args.command == "worker" else args.command


def cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    from services import supervisor  # noqa: PLC0415
    from shared.callables import check_callables  # noqa: PLC0415
    from shared.pipeline_spec import PipelineConfigError, load_pipelines  # noqa: PLC0415

    try:  # fail now with the reason, rather than children restarting forever
        check_callables(load_pipelines(settings.pipelines_file), import_them=False)
    except PipelineConfigError as exc:
        print(f"dlpipe up: {exc}", file=sys.stderr)
        return 1
    return supervisor.up(settings)


def cmd_api(settings: Settings, args: argparse.Namespace) -> int:
    from services.api.server import serve  # noqa: PLC0415

    return int(serve(settings) or 0)


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    if args.kind == "preprocess":
        from workers.preprocess import main as preprocess_main  # noqa: PLC0415

        return int(preprocess_main(settings, settings.preprocess_concurrency) or 0)
    if args.kind == "model":
        from workers.model_main import serve  # noqa: PLC0415

        return int(serve(settings, args.models) or 0)
    from workers.notifier import main as notifier_main  # noqa: PLC0415

    return int(notifier_main(settings) or 0)


def cmd_check(settings: Settings, args: argparse.Namespace) -> int:
    from shared.callables import check_callables, check_models  # noqa: PLC0415
    from shared.pipeline_spec import PipelineConfigError, load_pipelines  # noqa: PLC0415

    path = settings.pipelines_file
    try:
        config = load_pipelines(path)
        check_callables(config, import_them=not args.no_import)
        if not args.no_import:
            check_models(config)
    except PipelineConfigError as exc:
        print(f"dlpipe check: {path}: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - a stage module that fails on import: say which
        print(f"dlpipe check: {path}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    models = ", ".join(sorted(config.models)) or "none"
    print(f"{path}: OK: pipelines {', '.join(sorted(config.pipelines))}; models {models}")
    return 0


def cmd_healthcheck(settings: Settings, args: argparse.Namespace) -> int:
    if args.service == "api":
        import urllib.request  # noqa: PLC0415

        host = "127.0.0.1" if settings.host in ("0.0.0.0", "", "::") else settings.host
        url = f"http://{'[' + host + ']' if ':' in host else host}:{settings.port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=args.timeout_s) as response:  # noqa: S310
                ok = response.status == 200
        except OSError as exc:
            print(f"unhealthy: {url}: {exc}", file=sys.stderr)
            return 1
        return 0 if ok else 1

    import socket  # noqa: PLC0415
    import time  # noqa: PLC0415

    import redis  # noqa: PLC0415

    from shared import (  # noqa: PLC0415
        heartbeat,
        keys,
        redis_conn,  # noqa: PLC0415
    )

    if not settings.redis_configured():
        print("unhealthy: DLPIPE_REDIS_URL is not set (nor DLPIPE_REDIS_SENTINELS)", file=sys.stderr)
        return 1
    client = redis_conn.sync_client(
        settings, socket_timeout=args.timeout_s, socket_connect_timeout=args.timeout_s
    )
    try:
        now = int(time.time() * 1000)
        live = client.zrangebyscore(keys.WORKERS, heartbeat.live_since(now, settings.worker_ttl_ms), "+inf")
        me = socket.gethostname()
        for worker_id in live:
            fields = client.hgetall(keys.worker(worker_id.decode()))
            if fields.get(b"kind") == args.service.encode() and fields.get(b"host") == me.encode():
                return 0
    except redis.RedisError as exc:
        print(f"unhealthy: redis: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
    print(f"unhealthy: no live {args.service} worker on {me}", file=sys.stderr)
    return 1


def cmd_bench(settings: Settings, args: argparse.Namespace) -> int:
    from bench.cli import main as bench_main  # noqa: PLC0415 - bench-only code, loaded only here

    return bench_main(args.bench_args)


COMMANDS = {
    "up": cmd_up,
    "api": cmd_api,
    "worker": cmd_worker,
    "check": cmd_check,
    "healthcheck": cmd_healthcheck,
    "bench": cmd_bench,
    "deploy": deploy_k8s.run,  # `dlpipe deploy k8s`, its only target so far
    **{name: lambda settings, args: cli_client.run(args) for name in cli_client.COMMANDS},
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = settings_from_args(args)
    except ValidationError as exc:
        problems = "; ".join(
            f"DLPIPE_{'.'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in exc.errors()
            if err["type"] != "default_factory_not_called"  # a consequence of another error, not one
        )
        print(f"dlpipe: invalid settings: {problems}", file=sys.stderr)
        return 2
    if args.command != "healthcheck":
        try:
            setup_logging(settings.log_level, _role(args))
        except ValueError as exc:
            print(f"dlpipe: invalid settings: DLPIPE_LOG_LEVEL: {exc}", file=sys.stderr)
            return 2
    return COMMANDS[args.command](settings, args)


if __name__ == "__main__":
    sys.exit(main())
