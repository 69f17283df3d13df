"""The bench's arithmetic, free of processes and I/O: percentiles, the turn order, the ceiling,
aggregation over repeats, ratios and counter deltas."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th quantile (0 <= q <= 1), linear between the closest ranks (numpy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be within [0, 1], got {q}")
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def latency_summary(latencies_s: Sequence[float]) -> dict[str, float | None]:
    """p50/p95/p99/mean/max in milliseconds (None each when there are no samples)."""
    keys = ("p50_ms", "p95_ms", "p99_ms", "mean_ms", "max_ms")
    if not latencies_s:
        return dict.fromkeys(keys)
    ms = [v * 1000.0 for v in latencies_s]
    return {
        "p50_ms": round(percentile(ms, 0.50), 2),
        "p95_ms": round(percentile(ms, 0.95), 2),
        "p99_ms": round(percentile(ms, 0.99), 2),
        "mean_ms": round(statistics.fmean(ms), 2),
        "max_ms": round(max(ms), 2),
    }


def turn_order(systems: Sequence[str], repeats: int) -> list[tuple[int, str]]:
    """(repeat, system) in the order they run: every system once per repeat, A B C A B C ..."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    if len(set(systems)) != len(systems):
        raise ValueError(f"systems repeat: {list(systems)}")
    return [(r, system) for r in range(repeats) for system in systems]


def ceiling(cores: int, stage_cpu_s: Mapping[str, float], overhead_cpu_s: float = 0.0) -> dict[str, Any]:
    """The work-conserving ceiling: with every core busy on useful work all the time, jobs/s is
    cores / (CPU-seconds one job costs in all its stages, plus any per-job overhead)."""
    if cores < 1:
        raise ValueError(f"cores must be at least 1, got {cores}")
    if any(v < 0 for v in stage_cpu_s.values()) or overhead_cpu_s < 0:
        raise ValueError("CPU-seconds cannot be negative")
    per_job = sum(stage_cpu_s.values()) + overhead_cpu_s
    return {
        "cores": cores,
        "cpu_s_per_job": round(per_job, 6),
        "jobs_per_s": round(cores / per_job, 2) if per_job > 0 else None,
    }


def median_or_none(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def ratio(numerator: float | None, denominator: float | None, digits: int = 3) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, digits)


def counters_delta(
    before: Mapping[str, Mapping[str, float]], after: Mapping[str, Mapping[str, float]]
) -> dict[str, dict[str, float]]:
    """Per name, after - before for every counter (a name or counter missing before counts as 0)."""
    return {
        name: {k: v - before.get(name, {}).get(k, 0.0) for k, v in counters.items()}
        for name, counters in after.items()
    }


def model_activity(
    delta: Mapping[str, float], wall_s: float, workers: int = 1
) -> dict[str, float | int | None]:
    """Batches, items, mean batch size and duty cycle of one model: the share of the wall time
    its `workers` processes (dlpipe's model replicas; 1 for the others) spent in forward passes."""
    batches = int(delta.get("batches", 0))
    items = int(delta.get("items", 0))
    forward_ms = delta.get("forward_ms")
    return {
        "batches": batches,
        "items": items,
        "mean_batch_size": round(items / batches, 2) if batches else None,
        "forward_s": round(forward_ms / 1000.0, 3) if forward_ms is not None else None,
        "workers": workers,
        "duty_cycle": round(forward_ms / 1000.0 / wall_s / workers, 3)
        if forward_ms is not None and wall_s > 0
        else None,
    }
