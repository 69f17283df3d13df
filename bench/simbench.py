"""The bench on the simulated device (`--device sim`, bench/sim): each turn's own device and
pipelines file, the loads of a window (closed-loop clients, then Poisson arrivals at fractions of
the device's ceiling), and what the device itself logged in each window."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.sim import busylog
from bench.sim import pipelines as simpipes
from bench.sim.device import LOG_FILE
from bench.systems import Setup


def turn_setup(setup: Setup, spec: simpipes.SimSpec | None, system: str, repeat: int) -> Setup:
    """On the simulated device, a turn gets a fresh device (lock, busy log) and the pipelines
    file that names it; on the CPU, the setup as it is."""
    if spec is None:
        return setup
    folder = setup.run_dir / "sim" / f"{system}-{repeat + 1}"
    path = simpipes.write(spec, folder)
    return replace(setup, pipelines_file=path, device_log=folder / "device" / LOG_FILE)


def loads(
    concurrency: list[int], open_loop: list[float], spec: simpipes.SimSpec | None, workload: str
) -> list[tuple[int | str, float | None]]:
    """(label, arrivals per second or None) of each window: the closed-loop client counts, then
    each open-loop fraction of the device's ceiling (only on the simulated device)."""
    out: list[tuple[int | str, float | None]] = [(c, None) for c in concurrency]
    if spec is not None and workload in simpipes.MODELS_OF:
        ceiling = spec.ceiling_items_per_s(workload)
        out += [(poisson_label(f), f * ceiling) for f in open_loop]
    return out


def poisson_label(fraction: float) -> str:
    return f"poisson {fraction:.0%}"


def device_record(
    log: Path | None,
    t0: float,
    t1: float,
    jobs_per_s: float | None,
    spec: simpipes.SimSpec | None,
    workload: str,
) -> dict[str, Any] | None:
    """The window as the device saw it: duty cycle, batches per model, and throughput against
    the device's full-batch ceiling."""
    if log is None or spec is None or t1 <= t0:
        return None
    seen = busylog.window(busylog.read_log(log), t0, t1)
    ceiling = spec.ceiling_items_per_s(workload)
    return {
        **seen,
        "ceiling_items_per_s": round(ceiling, 3),
        "of_ceiling": round(jobs_per_s / ceiling, 4) if jobs_per_s is not None else None,
    }
