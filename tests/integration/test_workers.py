"""The worker loops on a real redis-server: in threads, and as the processes `dlpipe` runs.

Waiting is always polling a condition against a deadline. Webhooks go to a receiver on
127.0.0.1 only.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from pathlib import Path

import pytest
import redis
from standardwebhooks.webhooks import Webhook

from shared import keys
from shared.embedded_redis import free_port, start_redis
from shared.messages import JobStatus
from shared.pipeline_spec import load_pipelines
from shared.settings import Settings
from tests.stagefns import job_view, pipelines, queue_job
from tests.support.hooks import Receiver
from tests.support.procs import Procs
from tests.support.waiting import wait_for
from tests.support.webhooks import SECRET as WEBHOOK_SECRET
from tests.support.workers import is_final, make_settings, pending, running, thread_workers
from workers.notifier import serve as serve_notifier
from workers.preprocess import PreprocessWorker
from workers.store import Store


class NotifierThreads:
    """The whole notifier (events consumer, rq scheduler, rq workers) in this process, as a loop."""

    kind = "notifier"

    def __init__(self, settings: Settings, consumer: str) -> None:
        self.settings, self.consumer = settings, consumer

    def run(self, stop: threading.Event) -> None:
        serve_notifier(self.settings, stop, self.consumer)


# -- loops in threads ------------------------------------------------------------------


def test_the_loops_run_jobs_through_every_stage(
    redis_client: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    settings = make_settings(redis_url, tmp_path, pipelines())
    store, cpu, model = thread_workers(redis_client, settings)
    with running(cpu, model):
        queue_job(
            redis_client, store.config.pipelines["sums"], "t1", [{"v": 1}, {"v": 2, "bad": "x"}, {"v": 3}]
        )
        wait_for(lambda: is_final(redis_client, "t1"), 20, "job t1 to finish")
    view = job_view(redis_client, "t1")
    assert view.status == JobStatus.succeeded
    assert [o.status.value for o in view.outputs] == ["succeeded", "failed", "succeeded"]
    assert view.outputs[0].result["sum"] == 2.0 and view.outputs[2].result["sum"] == 6.0
    assert view.outputs[1].error == "bad input: x"
    for stream, group in [
        ("cpu.sums.prep", keys.CPU_GROUP),
        ("cpu.sums.post", keys.CPU_GROUP),
        ("model.summer", keys.MODEL_GROUP),
    ]:
        assert pending(redis_client, stream, group) == 0
    assert redis_client.zcard(keys.WORKERS) == 0  # heartbeats removed on a clean stop


def test_batches_fill_when_work_is_waiting(redis_client: redis.Redis, redis_url: str, tmp_path: Path) -> None:
    settings = make_settings(redis_url, tmp_path, pipelines(max_batch_size=8, max_batch_delay_ms=20))
    store, cpu, model = thread_workers(redis_client, settings)
    queue_job(redis_client, store.config.pipelines["sums"], "b1", [{"v": i} for i in range(20)])
    with running(cpu):
        wait_for(lambda: redis_client.xlen(keys.stream("model.summer")) == 20, 20, "20 items preprocessed")
        with running(model):
            wait_for(lambda: is_final(redis_client, "b1"), 20, "job b1 to finish")
    view = job_view(redis_client, "b1")
    assert view.status == JobStatus.succeeded
    assert [o.result["sum"] for o in view.outputs] == [2.0 * i for i in range(20)]
    sizes = [o.result["batch"] for o in view.outputs]
    stats = model.stats["summer"]
    assert stats.batched_items == 20 and stats.mean_batch > 1
    assert max(sizes) == 8 and stats.batches == 3, (sizes, stats)
    counters = {k.decode(): float(v) for k, v in redis_client.hgetall(keys.model_stats("summer")).items()}
    assert (counters["batches"], counters["items"], counters["failed_batches"]) == (3, 20, 0)
    assert counters["forward_ms"] == pytest.approx(stats.busy_s * 1000)


def test_a_loop_outlives_a_redis_restart(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data_dir, port = tmp_path / "redis", free_port()
    server, _ = start_redis(data_dir, port)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    try:
        settings = make_settings(url, tmp_path, pipelines())
        store, cpu, _ = thread_workers(client, settings)
        caplog.set_level(logging.WARNING, logger="workers.runtime")
        with running(cpu):
            wait_for(
                lambda: (
                    pending(client, "cpu.sums.prep", keys.CPU_GROUP) == 0
                    and client.exists(keys.stream("cpu.sums.prep"))
                ),
                10,
                "the worker's groups",
            )
            server.terminate()
            server.wait(timeout=10)
            wait_for(lambda: "redis unavailable" in caplog.text, 10, "the worker to notice Redis is gone")
            server, _ = start_redis(data_dir, port)
            queue_job(client, store.config.pipelines["sums"], "r1", [{"v": 5}])
            wait_for(lambda: client.xlen(keys.stream("model.summer")) == 1, 20, "the item preprocessed")
    finally:
        client.close()
        server.terminate()
        server.wait(timeout=10)


# -- real processes --------------------------------------------------------------------


def test_worker_processes_run_a_job_and_deliver_its_webhook(
    redis_client: redis.Redis, redis_url: str, tmp_path: Path, procs: Procs, receiver: Receiver
) -> None:
    settings = make_settings(redis_url, tmp_path, pipelines())
    pre = procs.start(settings, "workers.preprocess", "--concurrency", "2")
    model = procs.start(settings, "workers.model_main", "--models", "summer")
    notifier = procs.start(settings, "workers.notifier")

    def kinds() -> list[bytes]:
        ids = redis_client.zrange(keys.WORKERS, 0, -1)
        return sorted(redis_client.hget(keys.worker(i.decode()), "kind") or b"?" for i in ids)

    wanted = [b"model", b"notifier", b"preprocess", b"preprocess"]
    wait_for(lambda: kinds() == wanted, 60, f"4 workers' heartbeats\n{procs.logs()}")
    config = load_pipelines(settings.pipelines_file)
    queue_job(
        redis_client,
        config.pipelines["sums"],
        "p1",
        [{"v": 1}, {"v": 2}, {"v": 3, "crash": 1}],
        webhook=receiver.url,
    )
    wait_for(lambda: receiver.posts, 30, f"the webhook\n{procs.logs()}")
    path, headers, body = receiver.posts[0]
    message = Webhook(WEBHOOK_SECRET).verify(body, headers)
    sent = message["data"]
    assert path == "/hook" and headers["content-type"] == "application/json"
    assert message["type"] == "job.completed" and headers["webhook-id"].startswith("msg_p1_")
    assert sent["id"] == "p1" and sent["status"] == "succeeded"
    assert sent["webhook"] == {"url": receiver.url, "events": ["completed"]}
    assert [o["status"] for o in sent["outputs"]] == ["succeeded", "succeeded", "failed"]
    assert sent["outputs"][1]["result"]["sum"] == 4.0
    assert sent["outputs"][2]["error"] == "prep: ValueError: crash requested"
    stored = json.loads(job_view(redis_client, "p1").model_dump_json())
    assert sent == {**stored, "webhook": sent["webhook"]}
    for proc in (pre, model, notifier):
        assert procs.stop(proc) == 0, procs.logs()
    assert redis_client.zcard(keys.WORKERS) == 0  # every worker removed its heartbeat
    groups = [
        (keys.stream("cpu.sums.prep"), keys.CPU_GROUP),
        (keys.stream("model.summer"), keys.MODEL_GROUP),
        (keys.EVENTS, keys.NOTIFIER_GROUP),
    ]
    for stream, group in groups:
        assert redis_client.xinfo_consumers(stream, group) == [], "consumers retire on a clean exit"
    assert len(receiver.posts) == 1


@pytest.mark.parametrize("which", ["preprocess", "preprocess-ctrl-c", "model"])
def test_sigterm_lets_a_worker_finish_its_batch_and_exit_cleanly(
    which: str, redis_client: redis.Redis, redis_url: str, tmp_path: Path, procs: Procs
) -> None:
    # Each item of the batch takes 0.4 s in the preprocess stage; the model batch 2 s.
    args: tuple[str, ...]
    if which.startswith("preprocess"):
        doc = pipelines(prep="slow_vector", prep_params={"seconds": 0.4})
        stream, group, done_stream = "cpu.sums.prep", keys.CPU_GROUP, "model.summer"
        module, args = "workers.preprocess", ("--concurrency", "1")
    else:
        doc = pipelines("SlowSumModel", model_params={"seconds": 2.0})
        stream, group, done_stream = "model.summer", keys.MODEL_GROUP, "cpu.sums.post"
        module, args = "workers.model_main", ()
    settings = make_settings(redis_url, tmp_path, doc)
    config = load_pipelines(settings.pipelines_file)
    store = Store(redis_client, config, settings.job_ttl_s)
    queue_job(redis_client, config.pipelines["sums"], "w1", [{"v": i} for i in range(6)])
    if which == "model":  # run the first stage here, by hand
        cpu = PreprocessWorker(store, settings, "cpu-t")
        cpu.recover()
        while cpu.run_once(block_ms=1):
            pass
    ctrl_c = which.endswith("ctrl-c")
    proc = procs.start(settings, module, *args, own_group=ctrl_c)
    wait_for(lambda: pending(redis_client, stream, group) == 6, 60, f"the batch in hand\n{procs.logs()}")
    assert redis_client.xlen(keys.stream(done_stream)) == 0  # mid-batch: nothing finished yet
    assert procs.stop(proc, ctrl_c=ctrl_c) == 0, procs.logs()
    assert pending(redis_client, stream, group) == 0, procs.logs()
    assert redis_client.xlen(keys.stream(done_stream)) == 6  # the whole batch finished and went on
    assert redis_client.zcard(keys.WORKERS) == 0


def test_a_second_signal_exits_at_once(
    redis_client: redis.Redis, redis_url: str, tmp_path: Path, procs: Procs
) -> None:
    settings = make_settings(redis_url, tmp_path, pipelines("SlowSumModel", model_params={"seconds": 30}))
    config = load_pipelines(settings.pipelines_file)
    queue_job(redis_client, config.pipelines["sums"], "w2", [{"v": 1}])
    cpu = PreprocessWorker(Store(redis_client, config, settings.job_ttl_s), settings, "cpu-t")
    cpu.recover()
    cpu.run_once(block_ms=1)
    proc = procs.start(settings, "workers.model_main")
    wait_for(
        lambda: pending(redis_client, "model.summer", keys.MODEL_GROUP) == 1,
        60,
        f"work in hand\n{procs.logs()}",
    )
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    wait_for(lambda: "finishing the work in hand" in procs.log(proc), 10, "the first signal handled")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 1
    assert time.monotonic() - started < 10  # did not wait for the 30 s batch
    assert pending(redis_client, "model.summer", keys.MODEL_GROUP) == 1  # left for a reaper to claim


def test_the_notifier_loop_posts_to_a_local_receiver(
    redis_client: redis.Redis, redis_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    settings = make_settings(redis_url, tmp_path, pipelines())
    store, cpu, model = thread_workers(redis_client, settings)
    with running(cpu, model, NotifierThreads(settings, "n-t")):
        for job_id in ("n1", "n2"):
            queue_job(redis_client, store.config.pipelines["sums"], job_id, [{"v": 1}], webhook=receiver.url)
        queue_job(redis_client, store.config.pipelines["sums"], "n3", [{"v": 1}])
        wait_for(lambda: len(receiver.posts) == 2 and is_final(redis_client, "n3"), 20, "two webhooks")
        wait_for(
            lambda: (
                pending(redis_client, "events", keys.NOTIFIER_GROUP) == 0
                and redis_client.xlen(keys.EVENTS) == 3
            ),
            10,
            "all three events acked",
        )
    assert sorted(json.loads(body)["data"]["id"] for _, _, body in receiver.posts) == ["n1", "n2"]
