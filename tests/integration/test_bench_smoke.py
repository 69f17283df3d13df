"""Smoke test of `dlpipe bench`'s own parts: the model-only limit, and the classical baseline
server started, measured through the bench's client for a second or two, and stopped by pid.
(The peers need their own virtualenvs: `dlpipe bench` makes those, never the tests.)"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bench import procs, systems
from bench.client import Load, run_load
from bench.measure import measure_limit
from bench.photos import fhd_jpegs, request_body
from shared.embedded_redis import free_port

pytestmark = pytest.mark.bench


def test_model_only_limit_measures_each_configuration() -> None:
    result = measure_limit("efficientnet_lite0", batches=[1, 2], threads=[1], seconds=0.2)
    assert [(row["batch"], row["threads"]) for row in result["configs"]] == [(1, 1), (2, 1)]
    assert all(row["images_per_s"] > 0 and row["cpu_s_per_image"] > 0 for row in result["configs"])


def test_baseline_answers_the_bench_client_and_stops(tmp_path: Path) -> None:
    setup = systems.Setup(run_dir=tmp_path, workloads=["image-classify"], cores=2, peer_threads=1,
                          max_batch_size=4, batch_timeout_ms=2.0, dlpipe_env={}, peers={},
                          ready_timeout_s=120.0)  # fmt: skip
    port = free_port()
    turn = systems.start("baseline", setup, port)
    try:
        pid = turn.servers[0].proc.pid
        load = Load(path="/v1/pipelines/image-classify/jobs", bodies=[request_body(fhd_jpegs()[0])],
                    concurrency=2, warmup_s=0.5, duration_s=1.5)  # fmt: skip
        marks: dict[str, procs.CpuSnapshot] = {}
        window = asyncio.run(run_load(turn.base_url, load, lambda m: marks.update(
            {m: procs.cpu_snapshot(turn.processes(), turn.role)})))  # fmt: skip
    finally:
        systems.stop(turn, port)
    assert window.errors == 0, window.error_samples
    assert window.completed >= 1
    assert sum(procs.cpu_by_role(marks["start"], marks["end"]).values()) > 0
    assert turn.counters("image-classify")["efficientnet_lite0"]["items"] >= 1
    assert procs.port_is_free(port)
    assert not Path(f"/proc/{pid}").exists()
