"""Metrics written by the worker steps and the Lua scripts, against fakeredis (steps driven by
hand): counted once where things become final, carried in the round trips the workers make."""

from __future__ import annotations

from typing import Any

import pytest

from shared import keys, metrics
from shared.messages import now_ms
from shared.redis import scripts
from tests.stagefns import queue_job
from tests.support.worker_steps import SETTINGS, cpu_worker, drain, make_store
from tests.support.worker_steps import model_worker as fused_model_worker
from workers.model_worker import ModelWorker

# These steps run `post` in the preprocess worker, as a stage of its own (its queue wait, its
# entry redelivered): the model worker here does not fuse it (tests/unit/test_fusion.py does).
UNFUSED = SETTINGS.model_copy(update={"fuse_postprocess": False})


def model_worker(store: Any, names: list[str] | None) -> ModelWorker:
    return fused_model_worker(store, names, UNFUSED)


def stored(client: Any) -> metrics.Parsed:
    return metrics.parse(client.hgetall(keys.METRICS))


def count(histogram: metrics.Histogram) -> float:
    return sum(histogram.buckets.values())


def test_a_job_through_the_steps_counts_items_jobs_stages_waits_and_batches(client: Any) -> None:
    store = make_store(client)
    sums = store.config.pipelines["sums"]
    queue_job(client, sums, "m1", [{"v": 1}, {"v": 2, "bad": "x"}, {"v": 3}])
    queue_job(client, sums, "m2", [{"v": 1, "bad": "y"}])
    cpu, gpu = cpu_worker(store), model_worker(store, ["summer"])
    drain(cpu, gpu)
    parsed = stored(client)
    assert parsed.counters[metrics.ITEMS] == {("sums", "succeeded"): 2, ("sums", "failed"): 2}
    assert parsed.counters[metrics.JOBS] == {("sums", "succeeded"): 1, ("sums", "failed"): 1}
    stage_s = parsed.histograms[metrics.STAGE_SECONDS]
    # prep ran for all 4 items (2 failed in it); the model and post for the 2 good ones
    assert {k: count(h) for k, h in stage_s.items()} == {
        ("sums", "prep"): 4,
        ("sums", "infer"): 2,
        ("sums", "post"): 2,
    }
    forward_s = float(client.hget(keys.model_stats("summer"), "forward_ms")) / 1000
    assert stage_s[("sums", "infer")].sum == pytest.approx(forward_s)  # the shares add up to the batch
    waits = parsed.histograms[metrics.QUEUE_WAIT]
    assert {k: count(h) for k, h in waits.items()} == {
        ("sums", "prep"): 4,
        ("sums", "infer"): 2,
        ("sums", "post"): 2,
    }
    assert all(h.sum >= 0 for h in waits.values())
    batch = parsed.histograms[metrics.BATCH_SIZE][("summer",)]
    assert batch.buckets == {2.0: 1.0} and batch.sum == 2  # one forward pass of both good items
    drain(cpu, gpu)  # nothing new: nothing counted twice
    assert stored(client) == parsed


def test_a_redelivered_final_result_is_not_counted_twice(client: Any) -> None:
    store = make_store(client)
    queue_job(client, store.config.pipelines["sums"], "m3", [{"v": 1}])
    cpu, gpu = cpu_worker(store), model_worker(store, ["summer"])
    cpu.run_once()
    gpu.run_once()
    [entry] = store.read(keys.CPU_GROUP, "cpu-1", store.config.cpu_streams(), 8, None)
    [result] = [cpu.run_stage(entry, values) for values in store.load([entry]) if values is not None]
    assert store.complete(keys.CPU_GROUP, [result]) == [3]
    assert store.complete(keys.CPU_GROUP, [result]) == [0]  # the same entry again: a duplicate
    assert stored(client).counters[metrics.ITEMS] == {("sums", "succeeded"): 1}
    assert stored(client).counters[metrics.JOBS] == {("sums", "succeeded"): 1}


def test_cancel_counts_the_job_and_its_unfinished_items(client: Any) -> None:
    store = make_store(client)
    queue_job(client, store.config.pipelines["sums"], "m4", [{"v": 1}, {"v": 2, "bad": "x"}, {"v": 3}])
    cpu = cpu_worker(store)
    cpu.run_once()  # the bad one fails; the two others wait for the model
    cancel = client.register_script(scripts.CANCEL_JOB)
    job_keys = [
        keys.job("m4"),
        keys.job_outputs("m4"),
        keys.EVENTS,
        keys.backlog("sums"),
        keys.deadlines("sums"),
        keys.METRICS,
    ]
    assert cancel(keys=job_keys, args=[now_ms(), 3600, "m4"])[0] == 1
    assert cancel(keys=job_keys, args=[now_ms(), 3600, "m4"])[0] == 0  # ended already: nothing more
    parsed = stored(client)
    assert parsed.counters[metrics.ITEMS] == {("sums", "failed"): 1, ("sums", "canceled"): 2}
    assert parsed.counters[metrics.JOBS] == {("sums", "canceled"): 1}
