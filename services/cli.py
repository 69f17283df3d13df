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

from pydantic import ValidationError

from services import cli_client, deploy_k8s
from services.cli_args import build_parser, settings_from_args
from shared.logs import setup_logging
from shared.settings import Settings

log = logging.getLogger("dlpipe")


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
