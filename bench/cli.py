"""`dlpipe bench` (also `python -m bench`): the flags, then one run, its files and its table.

dlpipe bench                                   # everything, 3 repeats, 30 s windows
dlpipe bench --repeats 1 --duration-s 5 --warmup-s 2      # a smoke run
dlpipe bench --systems limit,stages,dlpipe,baseline --concurrency 4,8
dlpipe bench --device sim                      # on a simulated accelerator (bench/sim)
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

log = logging.getLogger("bench")

SYSTEMS = (
    "limit",
    "stages",
    "dlpipe",
    "dlpipe-oldest",
    "dlpipe-unfused",
    "baseline",
    "litserve",
    "ray",
    "api",
)
CPU_WORKLOADS = ("image-classify", "image-tag")
SIM_WORKLOADS = ("sim-chain", "sim-classify")
# What each device measures unless told: on the CPU, everything but the old scheduler; on the
# simulated device, dlpipe (its scheduler and the old one), the sequential flow and LitServe.
DEFAULTS = {
    "cpu": {
        "systems": [s for s in SYSTEMS if s not in ("dlpipe-oldest", "dlpipe-unfused")],
        "workloads": list(CPU_WORKLOADS),
        "concurrency": [8],
        "open_loop": [],
    },
    "sim": {
        "systems": ["dlpipe", "dlpipe-oldest", "baseline", "litserve"],
        "workloads": list(SIM_WORKLOADS),
        "concurrency": [8, 24, 64],
        "open_loop": [0.5, 0.9],
    },
}


def _ints(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected whole numbers separated by commas, got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive whole numbers, got {text!r}")
    return values


def _names(allowed: Sequence[str] | None) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        names = [x.strip() for x in text.split(",") if x.strip()]
        unknown = sorted(set(names) - set(allowed)) if allowed else []
        if not names or unknown:
            raise argparse.ArgumentTypeError(
                f"unknown {unknown or text!r}; choose from {', '.join(allowed or [])}"
            )
        return names

    return parse


def _fractions(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected fractions separated by commas, got {text!r}") from None
    if any(not 0 < v <= 2 for v in values):
        raise argparse.ArgumentTypeError(f"expected fractions of the ceiling in (0, 2], got {text!r}")
    return values


def _env_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.startswith("DLPIPE_"):
        raise argparse.ArgumentTypeError(f"expected DLPIPE_NAME=value, got {text!r}")
    return key, value


def build_parser() -> argparse.ArgumentParser:
    cores = os.cpu_count() or 1
    p = argparse.ArgumentParser(
        prog="dlpipe bench",
        description="Benchmark dlpipe on this machine against the model-only limit, the work-conserving "
        "ceiling, a classical one-process server and peers (LitServe, Ray Serve), interleaved.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--repeats", type=int, default=3, help="rounds of every system (A B C A B C ...)")
    p.add_argument("--duration-s", type=float, default=30.0, help="measured window per workload and turn")
    p.add_argument(
        "--requests", type=int, help="instead of --duration-s: measure this many completed requests"
    )
    p.add_argument("--warmup-s", type=float, default=5.0, help="load before each measured window")
    p.add_argument(
        "--device",
        choices=("cpu", "sim"),
        default="cpu",
        help="where the models run: this CPU, or a simulated accelerator (bench/sim) the CPU stages "
        "do not share",
    )
    p.add_argument(
        "--concurrency",
        type=_ints,
        default=None,
        help="concurrent clients, e.g. 4,8 to sweep (default: 8; sim: 8,24,64)",
    )
    p.add_argument(
        "--open-loop",
        type=_fractions,
        default=None,
        help="sim: also Poisson arrivals at these fractions of the device's ceiling (default 0.5,0.9)",
    )
    p.add_argument(
        "--sim-scale",
        type=float,
        default=None,
        help="sim: the published T4 batch curve, every cost times this (bench/sim/pipelines.py)",
    )
    p.add_argument(
        "--sim-costs",
        default=None,
        metavar="MODEL=A,B;...",
        help="sim: each model's cost a + b*n in ms instead, e.g. sim_detect=99,4.3;sim_classify=99,4.3",
    )
    p.add_argument(
        "--sim-max-batch", type=int, default=8, help="sim: the models' max_batch_size (everyone's)"
    )
    p.add_argument("--sim-delay-ms", type=float, default=2.0, help="sim: the models' max_batch_delay_ms")
    p.add_argument(
        "--tune-seconds",
        type=float,
        default=10.0,
        help="each peer configuration's tuning window before the turns (0: no tuning)",
    )
    p.add_argument(
        "--tune-concurrency",
        type=int,
        default=None,
        help="clients of the tuning windows (default: the middle --concurrency)",
    )
    p.add_argument(
        "--api-concurrency",
        type=_ints,
        default=[4, 8],
        help="the API-alone turn (`api`: no-op jobs, no workers): connections",
    )
    p.add_argument("--api-duration-s", type=float, default=10.0, help="the API-alone turn: measured window")
    p.add_argument(
        "--api-workers",
        type=_ints,
        default=sorted({1, cores}),
        help="the API-alone turn: API processes (DLPIPE_API_WORKERS), each in turn",
    )
    p.add_argument(
        "--poll-interval-ms",
        type=float,
        default=None,
        help="poll dlpipe jobs at this interval instead of waiting for them (Prefer: wait, long polls)",
    )
    p.add_argument(
        "--workloads",
        type=_names((*CPU_WORKLOADS, *SIM_WORKLOADS)),
        default=None,
        help="pipelines to load (default: image-classify,image-tag; sim: sim-chain,sim-classify)",
    )
    p.add_argument(
        "--systems",
        type=_names(SYSTEMS),
        default=None,
        help="what to measure (default: all but dlpipe's variants dlpipe-oldest, dlpipe-unfused; "
        "sim: dlpipe,dlpipe-oldest,baseline,litserve)",
    )
    p.add_argument("--out-dir", type=Path, default=Path("docs/benchmarks"), help="where the JSON and PNG go")
    p.add_argument("--name", help="file name stem (default bench-<UTC time>)")
    p.add_argument(
        "--cache-dir", type=Path, default=Path(".dlpipe/bench-venvs"), help="the peers' virtualenvs"
    )
    p.add_argument("--run-dir", type=Path, default=Path(".dlpipe/bench-runs"), help="servers' logs and data")
    p.add_argument(
        "--no-install", action="store_true", help="do not create missing peer venvs (skip the peer)"
    )
    p.add_argument(
        "--base-port",
        type=int,
        default=18100,
        help="dlpipe, dlpipe-oldest, dlpipe-unfused, baseline, litserve, ray, api: this port + 0..6",
    )
    p.add_argument(
        "--limit-batches", type=_ints, default=[1, 2, 4, 8, 16], help="model-only limit: batch sizes"
    )
    p.add_argument(
        "--limit-threads", type=_ints, default=list(range(1, cores + 1)), help="model-only: threads"
    )
    p.add_argument("--limit-seconds", type=float, default=2.0, help="model-only: seconds per configuration")
    p.add_argument(
        "--stage-seconds", type=float, default=3.0, help="stage costs: seconds per workload, batch"
    )
    p.add_argument("--peer-threads", type=int, default=cores, help="torch threads of the baseline and peers")
    p.add_argument(
        "--max-batch-size", type=int, help="peers' batching (default: the pipelines file's, as dlpipe)"
    )
    p.add_argument("--batch-timeout-ms", type=float, help="peers' batch wait (default: the pipelines file's)")
    p.add_argument(
        "--dlpipe-env",
        type=_env_pair,
        action="append",
        default=[],
        metavar="DLPIPE_X=V",
        help="a setting for `dlpipe up`, e.g. DLPIPE_TORCH_THREADS=1 (repeatable)",
    )
    return p


def _pipeline_batching(workload: str) -> tuple[int, float]:
    """The first model's batching in the pipelines file dlpipe runs: what the peers get too."""
    from shared.pipeline_spec import load_pipelines  # noqa: PLC0415
    from shared.settings import Settings  # noqa: PLC0415

    config = load_pipelines(Settings().pipelines_file)
    model = next(s.model for s in config.pipelines[workload].stages if s.model)
    batching = config.models[model or ""].batching_for("cpu")  # the bench's systems run on the CPU
    return (batching.max_batch_size, batching.max_batch_delay_ms) if batching else (1, 0.0)


def _sim_spec(args: argparse.Namespace):  # type: ignore[no-untyped-def]  # noqa: ANN202
    from bench.sim.pipelines import DEFAULT_SCALE, SimSpec, parse_costs  # noqa: PLC0415

    spec = SimSpec.published(args.sim_scale or DEFAULT_SCALE, args.sim_max_batch, args.sim_delay_ms)
    if args.sim_costs:
        from dataclasses import replace  # noqa: PLC0415

        spec = replace(spec, costs={**spec.costs, **parse_costs(args.sim_costs)})
    return spec


def _fill_defaults(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    defaults = DEFAULTS[args.device]
    for name in ("systems", "workloads", "concurrency", "open_loop"):
        if getattr(args, name) is None:
            setattr(args, name, list(defaults[name]))
    if args.device == "cpu" and set(args.workloads) & set(SIM_WORKLOADS):
        parser.error("the sim-* workloads run on the simulated device: add --device sim")
    if args.device == "sim":
        wrong = set(args.workloads) - set(SIM_WORKLOADS)
        if wrong or {"limit", "stages", "api", "ray"} & set(args.systems):
            parser.error(
                "--device sim runs the sim-* workloads on dlpipe, dlpipe-oldest, baseline and litserve"
            )


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _fill_defaults(args, parser)
    # SIGTERM unwinds like Ctrl-C, so the turn in hand stops its servers (by pid) on the way out.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    if not logging.getLogger().handlers:  # `python -m bench`; `dlpipe bench` has set up logging
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request otherwise
    from bench import aggregate, orchestrate, report  # noqa: PLC0415

    sim = _sim_spec(args) if args.device == "sim" else None
    size, delay = (
        (sim.max_batch_size, sim.max_batch_delay_ms) if sim else _pipeline_batching(args.workloads[0])
    )
    opts = orchestrate.Options(
        repeats=args.repeats,
        duration_s=args.duration_s,
        warmup_s=args.warmup_s,
        requests=args.requests,
        concurrency=args.concurrency,
        api_concurrency=args.api_concurrency,
        api_workers=args.api_workers,
        api_duration_s=args.api_duration_s,
        poll_interval_ms=args.poll_interval_ms,
        workloads=args.workloads,
        systems=[s for s in SYSTEMS if s in args.systems],
        out_dir=args.out_dir,
        cache_dir=args.cache_dir,
        run_dir=args.run_dir,
        base_port=args.base_port,
        limit_batches=args.limit_batches,
        limit_threads=args.limit_threads,
        limit_seconds=args.limit_seconds,
        stage_seconds=args.stage_seconds,
        peer_threads=args.peer_threads,
        max_batch_size=args.max_batch_size or size,
        batch_timeout_ms=args.batch_timeout_ms if args.batch_timeout_ms is not None else delay,
        dlpipe_env=dict(args.dlpipe_env),
        install_peers=not args.no_install,
        device=args.device,
        sim=sim,
        open_loop=args.open_loop,
        tune_seconds=args.tune_seconds,
        tune_concurrency=args.tune_concurrency,
    )
    result = orchestrate.run(opts)
    options = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(opts).items() if k != "sim"}
    summary = aggregate.summarize(result["turns"], os.cpu_count() or 1)
    doc = report.build(options, result, summary)
    problems = report.validate(doc)
    if problems:
        log.error("the result does not match its schema: %s", problems)
    stem = args.name or "bench-" + datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    json_path, png_path = report.write(doc, args.out_dir, stem)
    print(report.table(doc))
    print(f"\nwrote {json_path}" + (f" and {png_path}" if png_path else "") + f" in {result['wall_s']:.0f} s")
    return 1 if problems or summary["failed_turns"] else 0


if __name__ == "__main__":
    sys.exit(main())
