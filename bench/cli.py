"""`dlpipe bench` (also `python -m bench`): the flags (bench/flags.py) made into a run's options,
the run (bench/orchestrate.py), then its files and its table.

dlpipe bench                                   # everything, 3 repeats, 30 s windows
dlpipe bench --repeats 1 --duration-s 5 --warmup-s 2      # a smoke run
dlpipe bench --systems limit,stages,dlpipe,baseline --concurrency 4,8
dlpipe bench --device sim                      # on a simulated accelerator (bench/sim)
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from bench import flags

log = logging.getLogger("bench")


def _pipeline_batching(workload: str) -> tuple[int, float]:
    """The first model's batching in the pipelines file dlpipe runs: what the peers get too."""
    from shared.pipeline_spec import load_pipelines  # noqa: PLC0415
    from shared.settings import Settings  # noqa: PLC0415

    config = load_pipelines(Settings().pipelines_file)
    model = next(s.model for s in config.pipelines[workload].stages if s.model)
    batching = config.models[model or ""].batching_for("cpu")  # the bench's systems run on the CPU
    return (batching.max_batch_size, batching.max_batch_delay_ms) if batching else (1, 0.0)


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    parser = flags.build_parser()
    args = parser.parse_args(argv)
    flags.fill_defaults(args, parser)
    # SIGTERM unwinds like Ctrl-C, so the turn in hand stops its servers (by pid) on the way out.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    if not logging.getLogger().handlers:  # `python -m bench`; `dlpipe bench` has set up logging
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request otherwise
    from bench import aggregate, orchestrate, report  # noqa: PLC0415
    from bench.options import Options  # noqa: PLC0415

    sim = flags.sim_spec(args) if args.device == "sim" else None
    size, delay = (
        (sim.max_batch_size, sim.max_batch_delay_ms) if sim else _pipeline_batching(args.workloads[0])
    )
    opts = Options(
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
        systems=[s for s in flags.SYSTEMS if s in args.systems],
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
