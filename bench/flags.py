"""`dlpipe bench`'s flags: the parser, its value types (comma lists, fractions, DLPIPE_X=V), what
each device measures unless told (`fill_defaults`, which refuses what does not run there), and the
simulated device's spec from its flags (`sim_spec`). Only the standard library at import: `-h`
stays quick; bench/cli.py runs what the flags say."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.sim.pipelines import SimSpec

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


def sim_spec(args: argparse.Namespace) -> SimSpec:
    """The simulated device's costs and batching (--sim-scale or --sim-costs, --sim-max-batch,
    --sim-delay-ms)."""
    from bench.sim.pipelines import DEFAULT_SCALE, SimSpec, parse_costs  # noqa: PLC0415

    spec = SimSpec.published(args.sim_scale or DEFAULT_SCALE, args.sim_max_batch, args.sim_delay_ms)
    if args.sim_costs:
        spec = replace(spec, costs={**spec.costs, **parse_costs(args.sim_costs)})
    return spec


def fill_defaults(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """The device's defaults where a flag was not given; an error for what does not run there."""
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
