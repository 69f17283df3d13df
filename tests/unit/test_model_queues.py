"""The model worker's intake with the scheduler (workers/model_queues.py), against fakeredis:
while the device is busy a batch fills until the device is about to be free; while it is idle
the batch goes at once; the old policy takes what is queued. The waits run through the intake's
own `sleep`, which here also brings in the entries that arrive meanwhile."""

from __future__ import annotations

import time
from typing import Any

from tests.stagefns import queue_job
from tests.support.worker_steps import SETTINGS, cpu_worker, make_store, model_worker


def setup(client: Any, scheduler: str, replicas: int = 1) -> tuple[Any, Any, Any]:
    """A model worker that owns its device (one replica: a GPU's), or one of several CPU replicas."""
    store = make_store(client)
    cpu = cpu_worker(store)
    settings = SETTINGS.model_copy(update={"model_scheduler": scheduler, "model_replicas": replicas})
    gpu = model_worker(store, ["summer"], settings)
    for n in (1, 2, 4, 8):  # a fixed-cost device: 40 ms a batch + 1 ms an item
        gpu.curves["summer"].add(n, 40.0 + n)
    return store, cpu, gpu


def arrivals(client: Any, store: Any, cpu: Any, gpu: Any, more: int) -> list[float]:
    """The intake's sleep: the first wait brings `more` entries to the model stream."""
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        if not slept:
            queue_job(client, store.config.pipelines["sums"], "late", [{"v": i} for i in range(more)])
            while cpu.run_once():
                pass
        slept.append(seconds)
        time.sleep(seconds)

    gpu.queues.sleep = sleep
    return slept


def recorded_sleeps(gpu: Any) -> list[float]:
    """The intake's sleep, recording what it was asked to wait."""
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        time.sleep(seconds)

    gpu.queues.sleep = sleep
    return slept


def test_while_the_device_is_busy_the_batch_fills_until_it_is_about_to_be_free(client: Any) -> None:
    store, cpu, gpu = setup(client, "efficiency")
    queue_job(client, store.config.pipelines["sums"], "early", [{"v": 1}, {"v": 2}])
    cpu.run_once()
    slept = arrivals(client, store, cpu, gpu, more=4)
    gpu.device_clock.begin("summer", 8)  # a batch of 8 runs: 48 ms from now
    started = time.monotonic()
    free_at = started + gpu.device_clock.busy_for_s()
    handled, prepared = gpu.take_batch()
    assert handled == 6 and prepared is not None and len(prepared.ready) == 6  # 2 queued + 4 that came
    # It waited until (about) the predicted end: never asked to sleep past it, and not back before
    # it (a busy machine can only make it later, never earlier).
    assert slept and sum(slept) <= free_at - started + 0.002
    assert time.monotonic() >= free_at - 0.015
    # The batch follows the running one: committed, it counts as work the device has to do.
    assert gpu.device_clock.busy_for_s() > 0


def test_a_full_batch_does_not_wait_for_the_device(client: Any) -> None:
    store, cpu, gpu = setup(client, "efficiency")
    queue_job(client, store.config.pipelines["sums"], "full", [{"v": i} for i in range(10)])
    cpu.run_once()
    cpu.run_once()
    gpu.device_clock.begin("summer", 8)
    slept = recorded_sleeps(gpu)
    _, prepared = gpu.take_batch()
    assert prepared is not None and len(prepared.ready) == 8
    assert sum(slept) <= 0.006  # nothing to gain by waiting: decided at once (its own delay at most)


def test_while_the_device_is_idle_the_batch_goes_at_once(client: Any) -> None:
    store, cpu, gpu = setup(client, "efficiency")
    queue_job(client, store.config.pipelines["sums"], "one", [{"v": 1}])
    cpu.run_once()
    slept = arrivals(client, store, cpu, gpu, more=4)
    handled, prepared = gpu.take_batch()
    # Only the batch's own max_batch_delay_ms (5 ms here) is waited, as before the scheduler.
    assert prepared is not None and handled >= 1
    assert sum(slept) <= 0.006


def test_the_oldest_policy_takes_what_is_queued(client: Any) -> None:
    store, cpu, gpu = setup(client, "oldest")
    queue_job(client, store.config.pipelines["sums"], "early", [{"v": 1}, {"v": 2}])
    cpu.run_once()
    slept = arrivals(client, store, cpu, gpu, more=4)
    gpu.device_clock.begin("summer", 8)
    _, prepared = gpu.take_batch()
    assert prepared is not None and len(prepared.ready) == 2  # at once, whatever the device does
    assert sum(slept) <= 0.006


def test_a_replica_among_several_does_not_hold_entries_for_a_fuller_batch(client: Any) -> None:
    # Replicas share the streams item by item: what one holds back, an idle one may lack.
    store, cpu, gpu = setup(client, "efficiency", replicas=2)
    queue_job(client, store.config.pipelines["sums"], "early", [{"v": 1}, {"v": 2}])
    cpu.run_once()
    slept = arrivals(client, store, cpu, gpu, more=4)
    gpu.device_clock.begin("summer", 8)
    _, prepared = gpu.take_batch()
    assert prepared is not None and len(prepared.ready) == 2
    assert sum(slept) <= 0.006
