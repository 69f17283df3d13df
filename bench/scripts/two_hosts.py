"""Jobs/s and latency with the workers on another host than Redis and the API, against the same
processes on one host, in one run (needs root: the hosts are network namespaces).

    sudo PYTHONPATH=. .venv/bin/python bench/scripts/two_hosts.py --jobs 300 --rounds 2 [--delay-ms 1]

Each layout gets fresh test hosts (tests/support/netns.py: two namespaces, one veth pair, TEST-NET-1
addresses) and the light `sums` pipeline (tests/support/twohosts.py: text -> SumModel, no weights):
- `one-host`: Redis, the API and every worker on host A, the workers on Redis's loopback address;
- `two-hosts`: Redis and the API on A, the workers on B, on A's veth address (each of a job's
  hops, API -> Redis -> preprocess -> model -> postprocess -> events, crosses the pair).
With `--delay-ms`, B's end of the pair delays what it sends by that much (`tc netem`; skipped, and
said, where the kernel has no netem). The clients run on host A. First `--latency-jobs` jobs one
at a time (the latency of one job with nothing else queued), then `--jobs` jobs from `--clients`
threads; every submit asks `Prefer: wait=60`, so its answer is the finished job.
Prints one JSON line per layout and phase (and round: `--rounds` runs both layouts in turn).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.support import netns  # noqa: E402
from tests.support.twohosts import PIPELINE, Split, split_stack  # noqa: E402


def one_job(http: httpx.Client, k: int) -> float:
    started = time.perf_counter()
    response = http.post(
        f"/v1/pipelines/{PIPELINE}/jobs",
        json={"inputs": [{"text": "x" * (k % 7 + 1)}]},
        headers={"Prefer": "wait=60"},
    )
    took = time.perf_counter() - started
    if response.status_code != 200 or response.json()["status"] != "succeeded":
        raise RuntimeError(f"job {k}: {response.status_code} {response.text[:300]}")
    return took


def phase(split: Split, jobs: int, clients: int) -> dict[str, float]:
    def run(ks: range) -> list[float]:
        with split.a.entered(), httpx.Client(base_url=split.api_url, timeout=90, trust_env=False) as http:
            return [one_job(http, k) for k in ks]

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        parts = pool.map(run, [range(c, jobs, clients) for c in range(clients)])
        latencies = [t for part in parts for t in part]
    wall = time.perf_counter() - started
    cuts = statistics.quantiles(latencies, n=100)
    return {
        "jobs": jobs,
        "clients": clients,
        "jobs_per_s": round(jobs / wall, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 2),
        "p95_ms": round(cuts[94] * 1000, 2),
    }


def add_delay(host: netns.Host, delay_ms: float) -> str | None:
    """Delay what `host` sends on the pair; the reason it cannot, or None."""
    try:
        host.ip("link", "show", host.ifname)
        argv = [
            "ip",
            "netns",
            "exec",
            host.ns,
            "tc",
            "qdisc",
            "add",
            "dev",
            host.ifname,
            "root",
            "netem",
            "delay",
            f"{delay_ms}ms",
        ]
        subprocess.run(argv, check=True, capture_output=True, text=True)
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        return getattr(exc, "stderr", None) or str(exc)
    return None


def layout(name: str, args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix=f"dlpipe-{name}-") as tmp, netns.two_hosts() as (a, b):
        delay = ""
        if name == "two-hosts" and args.delay_ms:
            problem = add_delay(b, args.delay_ms)
            delay = f"netem {args.delay_ms} ms, B's sends" if problem is None else f"none: {problem.strip()}"
        with split_stack(a, b, Path(tmp), workers_on=b if name == "two-hosts" else a) as split:
            phase(split, 20, args.clients)  # warm up: imports, first batches, connections
            phases = (("one-at-a-time", args.latency_jobs, 1), ("loaded", args.jobs, args.clients))
            for label, jobs, clients in phases:
                row = {"layout": name, "phase": label, **phase(split, jobs, clients)}
                if delay:
                    row["delay"] = delay
                print(json.dumps(row), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--latency-jobs", type=int, default=50)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=1, help="both layouts, this many times, in turn")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="netem delay of what B sends")
    args = parser.parse_args()
    reason = netns.unavailable()
    if reason is not None:
        print(f"cannot make test hosts here: {reason}", file=sys.stderr)
        return 2
    for round_ in range(args.rounds):  # interleaved: the machine's load drifts between runs
        for name in ("one-host", "two-hosts"):
            print(f"# round {round_ + 1}: {name}", file=sys.stderr, flush=True)
            layout(name, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
