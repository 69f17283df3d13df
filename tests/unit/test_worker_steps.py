"""Worker steps against fakeredis: each test drives run_once() by hand (fakeredis never blocks)."""

from __future__ import annotations

import subprocess
import sys
import threading
from typing import Any

import numpy as np
import pytest
import redis
import torch

from shared import codecs, keys
from shared.backoff import Backoff
from shared.messages import JobStatus
from shared.pipeline_spec import parse_pipelines
from tests.conftest import REPO
from tests.stagefns import job_view, pipelines, queue_job
from tests.support.webhooks import make_notifier
from tests.support.worker_steps import SETTINGS, cpu_worker, drain, make_store, model_worker
from workers import runtime
from workers.heartbeat import Heartbeat
from workers.inference import load_models
from workers.model_worker import ModelWorker


def pending(client: Any, stream_name: str, group: str) -> int:
    return client.xpending(keys.stream(stream_name), group)["pending"]


# -- preprocess ------------------------------------------------------------------------


def test_preprocess_step_runs_stages_and_fails_bad_items_alone(client: Any) -> None:
    store = make_store(client, prep_params={"size": 3})
    queue_job(
        client,
        store.config.pipelines["sums"],
        "j1",
        [{"v": 1}, {"v": 2, "bad": "too dark"}, {"v": 3, "crash": 1}, {"v": 4}],
    )
    worker = cpu_worker(store)
    assert worker.run_once() == 4
    view = job_view(client, "j1")
    assert [o.status.value for o in view.outputs] == ["pending", "failed", "failed", "pending"]
    assert view.outputs[1].error == "bad input: too dark"  # an ItemError's message, as is
    assert view.outputs[2].error == "prep: ValueError: crash requested"
    # The good items went on to the model with the stage's params applied.
    assert client.xlen(keys.stream("model.summer")) == 2
    value = codecs.decode(client.hget(keys.item("j1", 3), keys.stage_output_field("prep")))
    np.testing.assert_array_equal(value, np.full((3,), 4.0, dtype=np.float32))
    assert pending(client, "cpu.sums.prep", keys.CPU_GROUP) == 0
    assert worker.run_once() == 0


def test_preprocess_step_fails_undecodable_input_and_skips_gone_items(client: Any) -> None:
    store = make_store(client)
    queue_job(client, store.config.pipelines["sums"], "j2", [{"v": 1}, {"v": 2}, {"v": 3}])
    client.hset(keys.item("j2", 0), keys.INPUT_FIELD, b"Zjunk")
    client.delete(keys.item("j2", 1))
    worker = cpu_worker(store)
    assert worker.run_once() == 3
    view = job_view(client, "j2")
    assert view.outputs[0].status.value == "failed"
    assert "prep: input cannot be decoded" in view.outputs[0].error
    assert view.outputs[1].status.value == "pending"  # gone: nothing to record
    assert client.xlen(keys.stream("model.summer")) == 1
    assert pending(client, "cpu.sums.prep", keys.CPU_GROUP) == 0  # all acknowledged


def test_preprocess_recover_takes_back_unfinished_entries(client: Any) -> None:
    store = make_store(client)
    queue_job(client, store.config.pipelines["sums"], "j3", [{"v": 1}, {"v": 2}])
    worker = cpu_worker(store)
    # The consumer read the entries, then lost them (an error mid-batch): they are pending.
    assert len(store.read(keys.CPU_GROUP, worker.consumer, worker.streams, 8, None)) == 2
    assert worker.run_once() == 0
    worker.recover()
    assert worker.run_once() == 1  # taken back one at a time: each runs alone
    assert client.xlen(keys.stream("model.summer")) == 1
    assert worker.run_once() == 1
    assert client.xlen(keys.stream("model.summer")) == 2
    assert pending(client, "cpu.sums.prep", keys.CPU_GROUP) == 0
    assert worker.run_once() == 0


def test_preprocess_worker_does_not_import_torch() -> None:
    code = (
        "import sys, fakeredis\n"
        "from shared.pipeline_spec import parse_pipelines\n"
        "from shared.settings import Settings\n"
        "from tests.stagefns import pipelines\n"
        "from workers.preprocess import PreprocessWorker\n"
        "from workers.store import Store\n"
        "store = Store(fakeredis.FakeRedis(), parse_pipelines(pipelines()), 60)\n"
        "worker = PreprocessWorker(store, Settings(read_block_ms=1), 'c')\n"
        "assert worker.functions, 'stage functions resolved'\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


# -- model -----------------------------------------------------------------------------


def test_model_step_batches_items_and_fails_a_wrong_shape_alone(client: Any) -> None:
    store = make_store(client)
    queue_job(client, store.config.pipelines["sums"], "j4", [{"v": 1}, {"v": 2, "n": 3}, {"v": 3}, {"v": 4}])
    cpu, gpu = cpu_worker(store), model_worker(store, ["summer"])
    assert cpu.run_once() == 4
    assert gpu.run_once() == 4  # one batch: everything waiting
    assert pending(client, "model.summer", keys.MODEL_GROUP) == 0
    drain(cpu)
    view = job_view(client, "j4")
    assert view.status == JobStatus.succeeded
    assert view.outputs[0].result == {"sum": 2.0, "batch": 3}
    assert view.outputs[3].result == {"sum": 8.0, "batch": 3}
    assert view.outputs[1].status.value == "failed"
    assert "shape (3,)" in view.outputs[1].error and "(2,)" in view.outputs[1].error
    stats = gpu.stats["summer"]
    assert (stats.batches, stats.batched_items, stats.items, stats.failed_batches) == (1, 3, 4, 0)
    assert stats.mean_batch == 3.0


def test_a_predict_exception_fails_every_item_of_the_batch(client: Any) -> None:
    store = make_store(client)
    queue_job(client, store.config.pipelines["boom"], "j5", [{"v": 1}, {"v": 2}, {"v": 3}])
    cpu, gpu = cpu_worker(store), model_worker(store, ["exploder"])
    drain(cpu, gpu)
    view = job_view(client, "j5")
    assert view.status == JobStatus.failed
    assert [o.error for o in view.outputs] == ["infer: RuntimeError: model exploded"] * 3
    assert gpu.stats["exploder"].failed_batches == 1
    assert pending(client, "model.exploder", keys.MODEL_GROUP) == 0


def model_counters(client: Any, model: str) -> dict[str, float]:
    return {k.decode(): float(v) for k, v in client.hgetall(keys.model_stats(model)).items()}


def test_model_counters_reach_redis_and_add_up(client: Any) -> None:
    """Each batch adds to the model's stats hash (what benchmarks read across processes):
    `items` counts the forward batch, not the items failed before it."""
    store = make_store(client)
    items = [{"v": 1}, {"v": 2, "n": 3}, {"v": 3}, {"v": 4}]
    queue_job(client, store.config.pipelines["sums"], "c1", items)
    cpu, gpu = cpu_worker(store), model_worker(store, ["summer"])
    assert cpu.run_once() == 4
    assert gpu.run_once() == 4  # one batch of 3; the wrong shape failed alone
    first = model_counters(client, "summer")
    assert sorted(first) == ["batches", "failed_batches", "forward_ms", "items"]
    assert (first["batches"], first["items"], first["failed_batches"]) == (1, 3, 0)
    assert first["forward_ms"] > 0
    drain(cpu)
    queue_job(client, store.config.pipelines["sums"], "c2", [{"v": 5}, {"v": 6}])
    assert cpu.run_once() == 2
    assert gpu.run_once() == 2
    stats, total = gpu.stats["summer"], model_counters(client, "summer")
    assert (total["batches"], total["items"], total["failed_batches"]) == (2, 5, 0)
    assert (stats.batches, stats.batched_items) == (2, 5)
    assert total["forward_ms"] == pytest.approx(stats.busy_s * 1000)
    assert total["forward_ms"] > first["forward_ms"]


def test_a_failed_batch_is_counted_in_redis(client: Any) -> None:
    store = make_store(client)
    queue_job(client, store.config.pipelines["boom"], "c3", [{"v": 1}, {"v": 2}, {"v": 3}])
    cpu, gpu = cpu_worker(store), model_worker(store, ["exploder"])
    assert cpu.run_once() == 3
    assert gpu.run_once() == 3
    counters = model_counters(client, "exploder")
    assert (counters["batches"], counters["items"], counters["failed_batches"]) == (1, 3, 1)
    assert pending(client, "model.exploder", keys.MODEL_GROUP) == 0


def test_model_worker_serves_the_model_whose_work_arrived_first(client: Any) -> None:
    store = make_store(client)
    cpu, gpu = cpu_worker(store), model_worker(store, None)
    queue_job(client, store.config.pipelines["tens"], "old", [{"v": 1}, {"v": 2}])
    assert cpu.run_once() == 2
    queue_job(client, store.config.pipelines["sums"], "new", [{"v": 1}])
    assert cpu.run_once() == 1
    assert gpu.run_once() == 2
    assert gpu.stats["tenfold"].batches == 1 and gpu.stats["summer"].batches == 0
    # The newer model's first entry was read while choosing: it is held, not lost.
    assert pending(client, "model.summer", keys.MODEL_GROUP) == 1
    assert gpu.run_once() == 1
    assert gpu.stats["summer"].batches == 1
    drain(cpu, gpu)
    assert [o.result["sum"] for o in job_view(client, "old").outputs] == [20.0, 40.0]
    assert job_view(client, "new").outputs[0].result == {"sum": 2.0, "batch": 1}


def test_finish_runs_the_entries_in_hand(client: Any) -> None:
    store = make_store(client)
    cpu, gpu = cpu_worker(store), model_worker(store, None)
    queue_job(client, store.config.pipelines["tens"], "a", [{"v": 1}])
    cpu.run_once()
    queue_job(client, store.config.pipelines["sums"], "b", [{"v": 1}, {"v": 2}])
    cpu.run_once()
    assert gpu.run_once() == 1
    assert pending(client, "model.summer", keys.MODEL_GROUP) == 1
    gpu.finish()
    assert pending(client, "model.summer", keys.MODEL_GROUP) == 0
    assert gpu.stats["summer"].items == 1  # only what it held; the other entry is still unread
    drain(cpu, gpu)
    assert job_view(client, "b").status == JobStatus.succeeded


def test_model_recover_takes_back_unfinished_entries(client: Any) -> None:
    store = make_store(client)
    cpu, gpu = cpu_worker(store), model_worker(store, ["summer"])
    queue_job(client, store.config.pipelines["sums"], "j6", [{"v": 1}, {"v": 2}])
    cpu.run_once()
    store.read(keys.MODEL_GROUP, gpu.consumer, ["model.summer"], 8, None)  # read, then "crashed"
    assert gpu.run_once() == 0
    gpu.recover()
    assert gpu.run_once() == 1  # taken back one at a time, each into a batch
    assert gpu.run_once() == 1
    assert pending(client, "model.summer", keys.MODEL_GROUP) == 0
    drain(cpu, gpu)
    assert job_view(client, "j6").status == JobStatus.succeeded


# -- notifier --------------------------------------------------------------------------


def test_notifier_queues_a_delivery_per_wanted_event_and_acks_every_event(client: Any) -> None:
    store = make_store(client)
    queue_job(client, store.config.pipelines["sums"], "hooked", [{"v": 1}], webhook="http://127.0.0.1:9/hook")
    queue_job(client, store.config.pipelines["sums"], "quiet", [{"v": 2}])
    queue_job(
        client,
        store.config.pipelines["sums"],
        "started-only",
        [{"v": 3}],
        webhook="http://127.0.0.1:9/hook",
        webhook_events=["started"],
    )
    drain(cpu_worker(store), model_worker(store, ["summer"]))
    client.xadd(keys.EVENTS, {"nonsense": "1"})
    notifier, queued = make_notifier(client, SETTINGS)
    # 3 completions, 1 start (started-only asked for it), the nonsense entry
    assert notifier.run_once() == 5
    assert sorted((job, round_, delay) for job, _, round_, delay in queued) == [
        ("hooked", 1, 0.0),
        ("started-only", 1, 0.0),
    ]
    by_job = {job: delivery for job, delivery, *_ in queued}
    started_hash = client.hgetall(keys.webhook(by_job["started-only"]))
    started = {k.decode(): v.decode() for k, v in started_hash.items()}
    assert started["event"] == "job.started" and started["state"] == "pending" and started["round"] == "1"
    hooked = {k.decode(): v.decode() for k, v in client.hgetall(keys.webhook(by_job["hooked"])).items()}
    assert hooked["event"] == "job.completed" and hooked["job"] == "hooked"
    assert client.hget(keys.job_webhook("hooked"), "completed").decode() == by_job["hooked"]
    assert client.xpending(keys.EVENTS, keys.NOTIFIER_GROUP)["pending"] == 0
    # The same event handled again (a crash before its ack) finds its delivery: no second one.
    [(event_id, fields)] = [e for e in client.xrange(keys.EVENTS) if e[1].get(b"job") == b"hooked"]
    assert notifier.handle(event_id.decode(), fields) == "queued"
    assert queued[-1][:3] == ("hooked", by_job["hooked"], 1)
    assert client.hget(keys.webhook(by_job["hooked"]), "round") == b"1"


# -- plumbing --------------------------------------------------------------------------


def test_run_loop_survives_errors_and_recovers_before_the_next_step() -> None:
    stop = threading.Event()
    outcomes: list[Any] = [redis.ConnectionError("down"), ValueError("bug"), None, None]
    recovered: list[int] = []
    steps: list[int] = []

    def step() -> None:
        steps.append(1)
        outcome = outcomes.pop(0)
        if not outcomes:
            stop.set()
        if outcome is not None:
            raise outcome

    runtime.run_loop(
        "test",
        step,
        stop,
        recover=lambda: recovered.append(len(steps)),
        backoff=Backoff(initial_s=0.001, max_s=0.002),
    )
    assert len(steps) == 4
    assert recovered == [0, 1, 2]  # at the start, then after each failed step


def test_heartbeat_announces_the_worker_and_removes_it_on_stop(client: Any) -> None:
    beat = Heartbeat(client, "w-1", "model", ["model.summer"], interval_ms=60_000, ttl_ms=10_000).start()
    assert client.zscore(keys.WORKERS, "w-1") is not None
    assert client.hgetall(keys.worker("w-1"))[b"kind"] == b"model"
    assert client.hgetall(keys.worker("w-1"))[b"streams"] == b"model.summer"
    beat.stop()
    assert client.zscore(keys.WORKERS, "w-1") is None and not client.exists(keys.worker("w-1"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_model_step_moves_batches_to_cuda(client: Any) -> None:
    store = make_store(client)
    queue_job(client, store.config.pipelines["sums"], "c1", [{"v": 1}, {"v": 2}])
    device = torch.device("cuda")
    gpu = ModelWorker(store, SETTINGS, "gpu-1", load_models(store.config, ["summer"], device), device)
    gpu.recover()
    drain(cpu_worker(store), gpu)  # SumModel.predict asserts its batch is on the model's device
    assert [o.result for o in job_view(client, "c1").outputs] == [
        {"sum": 2.0, "batch": 2},
        {"sum": 4.0, "batch": 2},
    ]


def test_the_model_worker_batches_as_its_device_type_says() -> None:
    from workers.inference import model_batching

    data = pipelines()
    data["models"]["tenfold"]["batching_by_device"] = {
        "cuda": {"max_batch_size": 64, "max_batch_delay_ms": 9}
    }
    config = parse_pipelines(data)
    on_gpu = model_batching(config, ["tenfold", "exploder"], torch.device("cuda"))
    on_cpu = model_batching(config, ["tenfold", "exploder"], torch.device("cpu"))
    assert (on_gpu["tenfold"].max_batch_size, on_gpu["tenfold"].max_batch_delay_ms) == (64, 9)
    assert on_cpu["tenfold"] == on_cpu["exploder"] == on_gpu["exploder"] == config.models["tenfold"].batching
