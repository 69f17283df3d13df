"""The run's chart (matplotlib, the `bench` extra): per workload, jobs/s of each system with the
work-conserving ceiling and the model-only limit as lines, and p50/p99 latency."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLORS = {"dlpipe": "#1f77b4", "baseline": "#7f7f7f", "litserve": "#ff7f0e", "ray": "#2ca02c"}


def draw(doc: dict[str, Any], path: Path) -> Path:
    summary = doc["summary"]
    workloads = list(summary["http"])
    if not workloads:
        raise ValueError("nothing to draw: no HTTP system was measured")
    fig, axes = plt.subplots(len(workloads), 2, figsize=(12, 4.2 * len(workloads)), squeeze=False)
    for row, workload in enumerate(workloads):
        by_conc = summary["http"][workload]
        labels, jobs, p50, p99, colors = [], [], [], [], []
        for conc, by_system in by_conc.items():
            for system, data in by_system.items():
                labels.append(f"{system}\n{conc} clients" if len(by_conc) > 1 else system)
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
        if summary["limit"] and workload == "image-classify":
            limit = summary["limit"]["best"]["images_per_s"]
            ax.axhline(limit, color="r", linestyle=":", linewidth=1, label=f"model-only limit {limit:.1f}")
        ax.set_xticks(list(x), labels, fontsize=8)
        ax.set_ylabel("jobs/s (median of repeats)")
        ax.set_title(f"{workload}: throughput")
        if ceiling or summary["limit"]:
            ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3, frameon=False)
        ax = axes[row][1]
        width = 0.4
        ax.bar([i - width / 2 for i in x], p50, width, label="p50", color=colors, alpha=0.6)
        ax.bar([i + width / 2 for i in x], p99, width, label="p99", color=colors)
        ax.set_xticks(list(x), labels, fontsize=8)
        ax.set_ylabel("latency, submit to final (ms)")
        ax.set_title(f"{workload}: latency p50 (light) / p99 (dark)")
    m = doc["machine"]
    fig.suptitle(f"dlpipe bench, {doc['created_at']}: {m['cpu_model']}, {m['cores']} cores; "
                 f"{doc['options']['repeats']} repeats, medians", fontsize=10)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
