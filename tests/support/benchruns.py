"""Made-up `dlpipe bench` results (turns and their windows) for the aggregation and report tests."""

from __future__ import annotations


def sample_window(jobs_per_s: float, p50: float, models: dict | None = None, cpu: dict | None = None) -> dict:
    """One measured window of image-classify at concurrency 8: `jobs_per_s`, p50 latency `p50` ms."""
    return {
        "workload": "image-classify",
        "concurrency": 8,
        "completed": 100,
        "errors": 0,
        "error_samples": [],
        "wall_s": 10.0,
        "jobs_per_s": jobs_per_s,
        "latency": {"p50_ms": p50, "p95_ms": p50 * 2, "p99_ms": p50 * 3, "mean_ms": p50, "max_ms": p50 * 4},
        "polls_per_job": None,
        "cpu_s_per_job": cpu or {"server": 0.05},
        "cpu_s_per_job_total": 0.05,
        "client_cpu_s_per_job": 0.002,
        "models": models,
    }


def sample_turns() -> list[dict]:
    """Three repeats of limit, stages, dlpipe and baseline turns, and one failed ray turn."""
    dl_cpu = {
        "api": 0.002,
        "redis": 0.001,
        "supervisor": 0.0,
        "notifier": 0.0005,
        "model": 0.03,
        "preprocess": 0.007,
    }
    turns = []
    for r, (dl, base) in enumerate([(30.0, 20.0), (32.0, 21.0), (28.0, 19.0)]):
        turns.append(
            {
                "repeat": r,
                "system": "limit",
                "limit": {
                    "model": "efficientnet_lite0",
                    "configs": [
                        {"batch": 1, "threads": 1, "images_per_s": 34.0 + r},
                        {"batch": 4, "threads": 2, "images_per_s": 50.0},
                    ],
                },
            }
        )
        turns.append(
            {
                "repeat": r,
                "system": "stages",
                "stages": {
                    "torch_threads": 1,
                    "workloads": {
                        "image-classify": {
                            "batch_sizes": {
                                "1": {
                                    "stages": {
                                        "decode": {"cpu_ms": 6.0},
                                        "classify": {"cpu_ms": 30.0},
                                        "top5": {"cpu_ms": 0.2},
                                    }
                                }
                            }
                        }
                    },
                },
            }
        )
        turns.append(
            {
                "repeat": r,
                "system": "dlpipe",
                "windows": [
                    sample_window(
                        dl, 250.0, {"efficientnet_lite0": {"duty_cycle": 0.9, "mean_batch_size": 1.5}}, dl_cpu
                    )
                ],
            }
        )
        turns.append({"repeat": r, "system": "baseline", "windows": [sample_window(base, 380.0)]})
    turns.append({"repeat": 2, "system": "ray", "error": "RuntimeError: did not start"})
    return turns
