"""How KEDA and the HPA would size a worker Deployment on its stream: a model, not a cluster.

    .venv/bin/python bench/scripts/autoscale_model.py

Why each stream has a pending trigger beside its lag trigger (services/keda.py). One stream, one
Deployment, one-second steps: items arrive at a rate, ready pods take them at `rate` a pod, a
new pod is ready `start_s` after it is added. The work in the pods' hands (XPENDING) is what a
pod holds at full load (the trigger's target) times how busy the pods are; the rest of the
backlog is the lag (XINFO GROUPS). Every 15 s the HPA does what Kubernetes documents, with the
ScaledObject's own numbers (services/keda.py: polling interval, scale-up and scale-down
policies, the 300 s scale-down window): per trigger ceil(count / target), the largest, the 10%
tolerance, the policies. Compared: the lag trigger alone, and lag with pending.

Prints one line per case, from the 15th minute on: mean pods, pod count changes per hour, the
share of time items waited (lag > 0), and the wait an item queued then would see (lag / ready
capacity: p99, max).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from services import keda  # noqa: E402


@dataclass(frozen=True)
class Case:
    name: str
    rate: float  # items a second one pod gets through
    target: int  # what one pod holds at full load: the triggers' lagCount / pendingEntriesCount
    start_s: int  # from added to ready (a model pod loads its weights)
    max_pods: int
    load: Callable[[float], float]  # items a second arriving at t


def behaviour() -> tuple[int, dict, dict]:
    spec = keda.scaled_object("model", 10, [])["spec"]
    rules = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    return spec["pollingInterval"], rules["scaleUp"], rules["scaleDown"]


WARMUP_S = 900  # counted from the 15th minute: the first backlog, from one pod, is the same for both


def simulate(case: Case, with_pending: bool, hours: float = 2.0) -> dict[str, float]:
    interval, up, down = behaviour()
    added = [-(10**9)]  # when each pod was added (the first is ready from the start)
    recommendations: list[tuple[float, int]] = []
    changes: list[tuple[float, int]] = []
    backlog, waited, waits, pod_seconds, switches = 0.0, 0, [], 0.0, 0
    steps = int(hours * 3600)
    for t in range(steps):
        backlog += case.load(t)
        ready = sum(1 for a in added if t - a >= case.start_s)
        done = min(backlog, ready * case.rate)
        backlog -= done
        busy = done / (ready * case.rate) if ready else 0.0
        pending = min(backlog + done, ready * case.target * busy)
        lag = max(0.0, backlog - pending)
        if t >= WARMUP_S:
            waited += lag > 0
            waits.append(lag / (ready * case.rate) if ready else math.inf)
            pod_seconds += len(added)
        if t % interval:
            continue
        current = len(added)
        counts = [lag, pending] if with_pending else [lag]
        ratio = max(counts) / (case.target * current)
        wanted = current if abs(ratio - 1) <= 0.1 else math.ceil(max(counts) / case.target)
        wanted = min(max(wanted, keda.MIN_PODS), case.max_pods)
        recommendations.append((t, wanted))
        if wanted > current:  # up: at once (no window), as far as the policies allow
            period = up["policies"][0]["periodSeconds"]
            base = current - sum(c for w, c in changes if t - w < period and c > 0)
            limit = max(
                base + p["value"] if p["type"] == "Pods" else math.ceil(base * (1 + p["value"] / 100))
                for p in up["policies"]
            )
            new = min(wanted, limit)
        else:  # down: to the highest recommendation of the window, a pod a period at most
            highest = max(r for w, r in recommendations if t - w <= down["stabilizationWindowSeconds"])
            rule = down["policies"][0]
            removed = sum(-c for w, c in changes if t - w < rule["periodSeconds"] and c < 0)
            new = max(min(highest, current), current - max(0, rule["value"] - removed))
        if new != current:
            switches += t >= WARMUP_S
            changes.append((t, new - current))
            added = added[:new] + [t] * (new - len(added)) if new > current else added[:new]
    waits.sort()
    counted = steps - WARMUP_S
    return {
        "pods": pod_seconds / counted,
        "changes_per_h": switches / (counted / 3600),
        "waiting_share": waited / counted,
        "wait_p99_s": waits[int(0.99 * len(waits))],
        "wait_max_s": waits[-1],
    }


def hourly(t: float) -> float:
    """Items a second at t: a CPU model pod's 60 a second times 0.5 to 6, a full swing an hour."""
    return 60 * (3.25 - 2.75 * math.cos(2 * math.pi * t / 3600))


CASES = [
    # The model worker on a CPU (the cpu overlay): ~60 images/s a pod (2 processes at ~30 ms an
    # EfficientNet-Lite0 forward), 2 batches of 8 per process in hand, a minute to start.
    Case("model on CPU, steady at 2.5 pods of load", 60, 32, 60, 10, lambda t: 150.0),
    # A GPU pod (the gpu overlay): a few thousand images/s, 2 batches of 32, two minutes to start.
    Case("model on GPU, steady at 2.5 pods of load", 2000, 64, 120, 4, lambda t: 5000.0),
    # Preprocess (decode ~6 ms an image, 2 processes): 8 entries a process in hand.
    Case("preprocess, steady at 2.5 pods of load", 300, 16, 15, 10, lambda t: 750.0),
    Case("model on CPU, from 0.5 to 6 pods of load and back, hourly", 60, 32, 60, 10, hourly),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=2.0, help="simulated time per case (default 2)")
    args = parser.parse_args(argv)
    for case in CASES:
        for with_pending in (False, True):
            r = simulate(case, with_pending, args.hours)
            triggers = "lag + pending" if with_pending else "lag only    "
            print(
                f"{case.name:58s} {triggers}  pods {r['pods']:5.2f}  changes/h {r['changes_per_h']:5.1f}  "
                f"waiting {r['waiting_share']:6.1%}  "
                f"wait p99 {r['wait_p99_s']:6.1f} s  max {r['wait_max_s']:6.1f} s"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
