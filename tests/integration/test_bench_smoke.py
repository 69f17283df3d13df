"""Smoke test of `dlpipe bench`'s own parts: the model-only limit, and the classical baseline
server started, measured through the bench's client for a second or two, and stopped by pid.
(The peers need their own virtualenvs: `dlpipe bench` makes those, never the tests.)"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from bench import procs, systems
from bench.client import Load, run_load
from bench.measure import measure_limit
from bench.options import Options
from bench.photos import fhd_jpegs, request_body
from shared.embedded_redis import free_port

pytestmark = pytest.mark.bench


def _setup(run_dir: Path, workloads: list[str], **changes: Any) -> systems.Setup:
    """A turn's setup, small: 2 cores, 1 peer thread, no peers, the peers' batching 4 and 2 ms."""
    defaults: dict[str, Any] = {
        "cores": 2,
        "peer_threads": 1,
        "max_batch_size": 4,
        "batch_timeout_ms": 2.0,
        "dlpipe_env": {},
        "peers": {},
        "ready_timeout_s": 120.0,
    }
    return systems.Setup(run_dir=run_dir, workloads=workloads, **{**defaults, **changes})


def test_model_only_limit_measures_each_configuration() -> None:
    result = measure_limit("efficientnet_lite0", batches=[1, 2], threads=[1], seconds=0.2)
    assert [(row["batch"], row["threads"]) for row in result["configs"]] == [(1, 1), (2, 1)]
    assert all(row["images_per_s"] > 0 and row["cpu_s_per_image"] > 0 for row in result["configs"])


def test_baseline_answers_the_bench_client_and_stops(tmp_path: Path) -> None:
    setup = _setup(tmp_path, ["image-classify"])
    port = free_port()
    turn = systems.start("baseline", setup, port)
    try:
        pid = turn.servers[0].proc.pid
        load = Load(
            path="/v1/pipelines/image-classify/jobs",
            bodies=[request_body(fhd_jpegs()[0])],
            concurrency=2,
            warmup_s=0.5,
            duration_s=1.5,
        )
        marks: dict[str, procs.CpuSnapshot] = {}
        window = asyncio.run(
            run_load(
                turn.base_url,
                load,
                lambda m: marks.update({m: procs.cpu_snapshot(turn.processes(), turn.role)}),
            )
        )
    finally:
        systems.stop(turn, port)
    assert window.errors == 0, window.error_samples
    assert window.completed >= 1
    assert sum(procs.cpu_by_role(marks["start"], marks["end"]).values()) > 0
    assert turn.counters("image-classify")["efficientnet_lite0"]["items"] >= 1
    assert procs.port_is_free(port)
    assert not Path(f"/proc/{pid}").exists()


def test_the_api_alone_turn_measures_accepted_jobs_and_stops(tmp_path: Path) -> None:
    """`dlpipe bench --systems api`: redis + `dlpipe api` on the no-op pipeline, driven by the lean
    client for a second, once with 1 and once with 2 API processes; everything stopped by pid."""
    from bench import orchestrate  # noqa: PLC0415

    setup = _setup(tmp_path, [], max_batch_size=1, batch_timeout_ms=0.0)
    opts = Options(api_concurrency=[2], api_workers=[1, 2], api_duration_s=1.0, warmup_s=0.5)
    port = free_port()
    out = orchestrate._http_turn("api", setup, port, [], opts)
    windows = out["windows"]
    assert [w["workload"] for w in windows] == ["noop (1 API process)", "noop (2 API processes)"]
    for window in windows:
        assert window["errors"] == 0, window["error_samples"]
        assert window["completed"] > 10 and window["statuses"] == {"202": window["completed"]}
        assert window["cpu_s_per_job"]["api"] > 0 and window["latency"]["p99_ms"] > 0
    assert procs.port_is_free(port)


def test_a_turn_on_the_simulated_device_reads_the_device_and_loads_open_loop(tmp_path: Path) -> None:
    """`--device sim`: the classical server on the turn's own simulated device, closed-loop then
    Poisson arrivals; the device's log gives each window's duty and batches; a rate over what the
    system served is not run."""
    from bench import orchestrate  # noqa: PLC0415
    from bench.sim.pipelines import CLASSIFIER, DETECTOR, Cost, SimSpec  # noqa: PLC0415

    spec = SimSpec({DETECTOR: Cost(5.0, 0.5), CLASSIFIER: Cost(5.0, 0.5)}, max_batch_size=4)
    setup = _setup(tmp_path, ["sim-classify"], device="sim")
    opts = Options(
        concurrency=[2],
        open_loop=[0.01, 50.0],
        warmup_s=0.5,
        duration_s=1.5,
        workloads=["sim-classify"],
        device="sim",
        sim=spec,
    )
    port = free_port()
    out = orchestrate._http_turn("baseline", setup, port, [request_body(fhd_jpegs()[0])], opts)
    closed, poisson = out["windows"]
    assert (closed["concurrency"], poisson["concurrency"]) == (2, "poisson 1%")
    for window in (closed, poisson):
        assert window["errors"] == 0 and window["completed"] >= 1, window["error_samples"]
        device = window["device"]
        assert 0 < device["duty_cycle"] < 1 and device["overlap_s"] == 0.0
        assert device["models"][CLASSIFIER]["mean_batch_size"] == 1.0  # the classical flow: one at a time
    assert poisson["arrivals_per_s"] == pytest.approx(
        0.01 * spec.ceiling_items_per_s("sim-classify"), rel=1e-3
    )
    assert [s["load"] for s in out["skipped"]] == ["poisson 5000%"]
    assert procs.port_is_free(port)
