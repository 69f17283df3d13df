"""What one bench run is told (`Options`): the systems, workloads and loads, the windows, the
folders and ports, the peers' batching and the device. bench/cli.py fills it from the flags;
bench/orchestrate.py runs it, bench/windows.py and bench/tuning.py read their windows from it."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from bench import systems
from bench.sim.pipelines import SimSpec

MEASUREMENTS = ("limit", "stages")
ALL_SYSTEMS = (*MEASUREMENTS, *systems.HTTP_SYSTEMS)


@dataclass
class Options:
    repeats: int = 3
    duration_s: float = 30.0
    warmup_s: float = 5.0
    requests: int | None = None
    concurrency: list[int] = field(default_factory=lambda: [8])
    api_concurrency: list[int] = field(default_factory=lambda: [4, 8])  # the API-alone turn's clients
    api_workers: list[int] = field(default_factory=lambda: sorted({1, os.cpu_count() or 1}))  # its processes
    api_duration_s: float = 10.0  # its measured windows (hundreds of jobs a second: 10 s is plenty)
    poll_interval_ms: float | None = None  # None: dlpipe's clients wait (Prefer: wait, long polls)
    workloads: list[str] = field(default_factory=lambda: ["image-classify", "image-tag"])
    systems: list[str] = field(default_factory=lambda: list(ALL_SYSTEMS))
    out_dir: Path = Path("docs/benchmarks")
    cache_dir: Path = Path(".dlpipe/bench-venvs")
    run_dir: Path = Path(".dlpipe/bench-runs")
    base_port: int = 18100
    limit_batches: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16])
    limit_threads: list[int] = field(default_factory=lambda: list(range(1, (os.cpu_count() or 1) + 1)))
    limit_seconds: float = 2.0
    stage_seconds: float = 3.0
    peer_threads: int = os.cpu_count() or 1
    max_batch_size: int = 4
    batch_timeout_ms: float = 2.0
    dlpipe_env: dict[str, str] = field(default_factory=dict)
    install_peers: bool = True
    device: str = "cpu"  # "sim": the models run on the simulated accelerator (bench/sim)
    sim: SimSpec | None = None  # its cost curves and batching (device "sim")
    open_loop: list[float] = field(default_factory=list)  # Poisson rates, fractions of the ceiling
    tune_seconds: float = 0.0  # each peer configuration's tuning window (0: no tuning)
    tune_concurrency: int | None = None  # clients of the tuning windows (None: the middle one)
