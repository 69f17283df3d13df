"""The bench's simulated accelerator (bench/sim): its lock shared across processes, its busy log,
the duty cycle and batches computed from it, and the full-batch ceiling."""

from __future__ import annotations

import itertools
import multiprocessing
import time
from pathlib import Path

import pytest

from bench.sim.busylog import Busy, overlap_s, read_log, window
from bench.sim.device import LOG_FILE, SimDevice
from bench.sim.pipelines import CLASSIFIER, DETECTOR, Cost, SimSpec, parse_costs


def _hold(folder: str, model: str, times: int, ms: float) -> None:
    device = SimDevice(Path(folder))
    for _ in range(times):
        device.run(model, 2, ms)


def test_two_processes_take_turns_on_the_device_and_its_log_shows_it(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")  # the child only sleeps and writes a file
    procs = [ctx.Process(target=_hold, args=(str(tmp_path), name, 5, 20.0)) for name in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    intervals = read_log(tmp_path / LOG_FILE)
    assert len(intervals) == 10 and {b.model for b in intervals} == {"a", "b"}
    assert len({b.pid for b in intervals}) == 2
    ordered = sorted(intervals, key=lambda b: b.start)
    assert all(x.end <= y.start for x, y in itertools.pairwise(ordered))  # never at once
    assert overlap_s(intervals) == 0.0
    assert all(b.end - b.start >= 0.020 for b in intervals)
    t0, t1 = ordered[0].start, ordered[-1].end
    seen = window(intervals, t0, t1)
    busy = sum(b.end - b.start for b in intervals)
    assert seen["duty_cycle"] == pytest.approx(busy / (t1 - t0), abs=1e-3)
    assert seen["models"]["a"] == {
        "batches": 5,
        "items": 10,
        "mean_batch_size": 2.0,
        "busy_s": pytest.approx(sum(b.end - b.start for b in intervals if b.model == "a"), abs=1e-3),
    }


def test_threads_of_one_process_take_turns_too(tmp_path: Path) -> None:
    import threading  # noqa: PLC0415

    device = SimDevice(tmp_path)
    threads = [threading.Thread(target=device.run, args=("m", 1, 15.0)) for _ in range(3)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert time.monotonic() - started >= 0.045
    assert overlap_s(read_log(tmp_path / LOG_FILE)) == 0.0


def test_the_window_clips_intervals_and_counts_batches_that_start_in_it() -> None:
    log = [Busy(0.0, 1.0, "a", 4, 1), Busy(1.5, 2.5, "b", 8, 1), Busy(2.8, 3.0, "a", 2, 1)]
    seen = window(log, 0.5, 2.0)
    assert seen["duty_cycle"] == pytest.approx((0.5 + 0.5) / 1.5, abs=1e-4)
    assert seen["models"] == {"b": {"batches": 1, "items": 8, "mean_batch_size": 8.0, "busy_s": 1.0}}
    assert overlap_s([Busy(0, 2, "a", 1, 1), Busy(1, 3, "b", 1, 2)]) == 1.0  # a broken device would show
    with pytest.raises(ValueError):
        window(log, 1.0, 1.0)


def test_a_partial_last_line_is_left_out(tmp_path: Path) -> None:
    (tmp_path / LOG_FILE).write_text("1.0 2.0 a 3 7\n2.5 3.0 b")
    assert read_log(tmp_path / LOG_FILE) == [Busy(1.0, 2.0, "a", 3, 7)]
    assert read_log(tmp_path / "missing.log") == []


def test_the_ceiling_is_full_batches_back_to_back() -> None:
    spec = SimSpec({DETECTOR: Cost(100.0, 5.0), CLASSIFIER: Cost(60.0, 2.5)}, max_batch_size=8)
    # per item: (100 + 40) / 8 + (60 + 20) / 8 = 27.5 ms -> 36.36 items/s; one model: 80/8 = 10 ms
    assert spec.ceiling_items_per_s("sim-chain") == pytest.approx(1000 / 27.5)
    assert spec.ceiling_items_per_s("sim-classify") == pytest.approx(100.0)
    published = SimSpec.published(scale=8.0)
    assert published.costs[DETECTOR] == Cost(99.44, 4.28)  # the T4 line, 8 times slower
    assert parse_costs("sim_detect=10,1;sim_classify=5,0.5") == {
        DETECTOR: Cost(10.0, 1.0),
        CLASSIFIER: Cost(5.0, 0.5),
    }
    with pytest.raises(ValueError):
        parse_costs("other=1,2")
