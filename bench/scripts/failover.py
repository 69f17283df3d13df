"""Accepted jobs lost, jobs duplicated and time to serve again across a Redis Sentinel failover,
with and without WAIT (DLPIPE_REDIS_MIN_REPLICAS=1 / 0).

    PYTHONPATH=. .venv/bin/python bench/scripts/failover.py --jobs 300 --kill-after 100 --rounds 2

Each round, each mode: a primary, a replica and three sentinels (real redis-server processes on
free loopback ports, down-after 1 s, failover-timeout 3 s; with `--lag-ms` the replica replicates
through a proxy that delays the link and drops what it holds when the primary dies), `dlpipe up` on the sentinels with a
light pipeline (tests/failover.py: text -> SumModel, no weights), `--jobs` jobs submitted by 4
client threads (an Idempotency-Key each, retried on 503 and errors), the primary SIGKILLed once
`--kill-after` are accepted and started again as a replica once the replica is promoted. Then:
accepted jobs absent from the new primary (lost), jobs made twice for one key (duplicated),
accepted jobs that never ended, seconds from the kill to the promotion and to the first 202 of
a request sent after the kill. Prints one JSON line per run, then a summary.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.e2e.conftest import start_stack, stop_stack  # noqa: E402
from tests.failover import run_failover, stack_env, start_topology  # noqa: E402


def one_run(min_replicas: int, jobs: int, kill_after: int, lag_ms: float) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="dlpipe-failover-") as tmp_name:
        tmp = Path(tmp_name)
        topo = start_topology(tmp / "redis", lag_ms)
        try:
            stack = start_stack(tmp, stack_env(topo, tmp, min_replicas))
            try:
                started = time.monotonic()
                result = run_failover(stack.base_url, topo, jobs, kill_after)
                took = time.monotonic() - started
                restarts = stack.log().count("; restarting in ")
            finally:
                stop_stack(stack)
        finally:
            topo.stop()
    return {
        "min_replicas": min_replicas,
        "lag_ms": lag_ms,
        "jobs": jobs,
        "accepted": result.accepted,
        "lost": len(result.lost),
        "lost_jobs": result.lost[:20],
        "duplicated": len(result.duplicated),
        "unfinished": len(result.unfinished),
        "promoted_s": round(result.promoted_s, 2),
        "served_again_s": round(result.served_s, 2),
        "refused": result.refused,
        "process_restarts": restarts,
        "run_s": round(took, 1),
        "readyz_reasons": result.readyz_reasons,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--kill-after", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--modes", default="1,0", help="DLPIPE_REDIS_MIN_REPLICAS values, in order")
    parser.add_argument(
        "--lag-ms",
        default="0,100",
        help="replication link latencies to run (tests/failover.py LagProxy; 0: none)",
    )
    args = parser.parse_args()
    runs = []
    for _ in range(args.rounds):
        for lag in [float(x) for x in args.lag_ms.split(",")]:
            for mode in [int(m) for m in args.modes.split(",")]:
                run = one_run(mode, args.jobs, args.kill_after, lag)
                print(json.dumps(run), flush=True)
                runs.append(run)
    for lag, mode in sorted({(r["lag_ms"], r["min_replicas"]) for r in runs}):
        mine = [r for r in runs if r["min_replicas"] == mode and r["lag_ms"] == lag]
        print(
            f"lag_ms={lag:g} min_replicas={mode}: runs={len(mine)} lost={[r['lost'] for r in mine]} "
            f"duplicated={[r['duplicated'] for r in mine]} promoted_s={[r['promoted_s'] for r in mine]} "
            f"served_again_s={[r['served_again_s'] for r in mine]}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
