"""The run's chart (matplotlib, the `bench` extra): per workload, jobs/s of each system with the
work-conserving ceiling and the model-only limit as lines, and p50/p99 latency."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLORS = {
    "dlpipe": "#1f77b4",
    "dlpipe-oldest": "#9ecae1",
    "dlpipe-unfused": "#6baed6",
    "baseline": "#7f7f7f",
    "litserve": "#ff7f0e",
    "ray": "#2ca02c",
}


def device_ceiling(by_conc: dict[str, Any]) -> float | None:
    """The simulated device's full-batch ceiling of a workload (bench/simbench.py), if it ran on one."""
    for by_system in by_conc.values():
        for data in by_system.values():
            if data.get("device"):
                return data["device"]["ceiling_items_per_s"]
    return None


def draw(doc: dict[str, Any], path: Path) -> Path:
    summary = doc["summary"]
    workloads = list(summary["http"])
    if not workloads:
        raise ValueError("nothing to draw: no HTTP system was measured")
    bars = max(sum(len(by_system) for by_system in summary["http"][w].values()) for w in workloads)
    width = max(12.0, 0.35 * bars * 2)  # many loads x systems (the simulated device's runs): wider
    fig, axes = plt.subplots(len(workloads), 2, figsize=(width, 4.6 * len(workloads)), squeeze=False)
    for row, workload in enumerate(workloads):
        by_conc = summary["http"][workload]
        labels, jobs, p50, p99, colors = [], [], [], [], []
        for conc, by_system in by_conc.items():
            for system, data in by_system.items():
                load = f"{conc} clients" if str(conc).isdigit() else str(conc)
                labels.append(f"{system} @ {load}" if len(by_conc) > 1 else system)
                jobs.append(data["jobs_per_s"] or 0.0)
                p50.append(data["latency_ms"]["p50"] or 0.0)
                p99.append(data["latency_ms"]["p99"] or 0.0)
                colors.append(COLORS.get(system, "#9467bd"))
        x = range(len(labels))
        ax = axes[row][0]
        bars = ax.bar(x, jobs, color=colors)
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
        ceiling = (summary["ceiling"].get(workload) or {}).get("compute_only", {}).get("jobs_per_s")
        if ceiling:
            ax.axhline(ceiling, color="k", linestyle="--", linewidth=1, label=f"ceiling {ceiling:.1f}")
        with_overhead = (summary["ceiling"].get(workload) or {}).get("with_stack_overhead", {})
        if with_overhead:
            value = next(iter(with_overhead.values()))["jobs_per_s"]
            ax.axhline(
                value,
                color="k",
                linestyle="-.",
                linewidth=1,
                label=f"ceiling with stack overhead {value:.1f}",
            )
        device = device_ceiling(by_conc)
        if device:
            ax.axhline(
                device,
                color="m",
                linestyle="--",
                linewidth=1,
                label=f"device ceiling (full batches) {device:.1f}",
            )
        if summary["limit"] and workload == "image-classify":
            limit = summary["limit"]["best"]["images_per_s"]
            ax.axhline(limit, color="r", linestyle=":", linewidth=1, label=f"model-only limit {limit:.1f}")
        ax.set_xticks(list(x), labels, fontsize=7, rotation=60 if len(by_conc) > 1 else 0, ha="right")
        ax.set_ylabel("jobs/s (median of repeats)")
        ax.set_title(f"{workload}: throughput")
        if ceiling or summary["limit"] or device:
            ax.legend(fontsize=8, loc="best", ncol=1, framealpha=0.8)
        ax = axes[row][1]
        width = 0.4
        ax.bar([i - width / 2 for i in x], p50, width, label="p50", color=colors, alpha=0.6)
        ax.bar([i + width / 2 for i in x], p99, width, label="p99", color=colors)
        ax.set_xticks(list(x), labels, fontsize=7, rotation=60 if len(by_conc) > 1 else 0, ha="right")
        ax.set_ylabel("latency, submit to final (ms)")
        ax.set_title(f"{workload}: latency p50 (light) / p99 (dark)")
    m = doc["machine"]
    fig.suptitle(
        f"dlpipe bench, {doc['created_at']}: {m['cpu_model']}, {m['cores']} cores; "
        f"{doc['options']['repeats']} repeats, medians",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
