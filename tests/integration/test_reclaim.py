"""Workers that die holding entries: another worker takes them back; poison entries are
given up. Real redis-server (the bundled 6.2), real worker processes, SIGKILL.

Waiting is always polling a condition against a deadline.
"""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path
from typing import Any

import pytest
import redis

from shared import keys
from shared.messages import JobStatus
from shared.pipeline_spec import load_pipelines
from shared.settings import Settings
from tests.stagefns import job_view, pipelines, queue_job
from tests.support.hooks import Receiver
from tests.support.procs import Procs
from tests.support.waiting import wait_until
from tests.support.workers import is_final, make_settings, pending, running, thread_workers
from workers.preprocess import PreprocessWorker
from workers.reclaim import Reclaimer
from workers.store import Store

LEASE = {"lease_ms": 500}


def short_lease(settings: Settings, **more: Any) -> Settings:
    return settings.model_copy(update={**LEASE, **more})


def fields_of(entry: Any) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in entry[1].items()}


def consumers(client: redis.Redis, stream: str, group: str) -> dict[str, int]:
    return {c["name"].decode(): c["pending"] for c in client.xinfo_consumers(keys.stream(stream), group)}


def events_pending(client: redis.Redis) -> int:
    return int(client.xpending(keys.EVENTS, keys.NOTIFIER_GROUP)["pending"])


def sigkill(proc: Any) -> None:
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=10) == -signal.SIGKILL


def assert_done_once(client: redis.Redis, job_id: str, n: int) -> None:
    """Succeeded, every output present once, each item passed each stage once, one event."""
    view = job_view(client, job_id)
    assert view.status == JobStatus.succeeded
    assert (view.progress.done, view.progress.total) == (n, n)
    assert len(client.hgetall(keys.job_outputs(job_id))) == n
    assert [o.result["sum"] for o in view.outputs] == [2.0 * i for i in range(n)]
    assert client.xlen(keys.stream("model.summer")) == n  # queued for the model once each
    assert client.xlen(keys.stream("cpu.sums.post")) == n
    assert [fields_of(e)["job"] for e in client.xrange(keys.EVENTS)] == [job_id]
    assert client.xlen(keys.DEADLETTER) == 0
    for stream, group in [("cpu.sums.prep", keys.CPU_GROUP), ("model.summer", keys.MODEL_GROUP)]:
        assert pending(client, stream, group) == 0


# -- the claim script on Redis 6.2 ---------------------------------------------------------


def test_the_claim_script_on_this_redis(redis_client: redis.Redis) -> None:
    stream = keys.stream("cpu.x.y")
    redis_client.xgroup_create(stream, "cpu", id="0", mkstream=True)
    ids = [redis_client.xadd(stream, {"n": str(i)}).decode() for i in range(3)]
    redis_client.xreadgroup("cpu", "dead", {stream: ">"})
    redis_client.xdel(stream, ids[0])  # deleted while pending: 6.2 keeps it in the PEL
    reclaimer = Reclaimer(redis_client, "cpu", "alive", [stream], lease_ms=0, max_deliveries=2)
    taken = reclaimer.take()
    assert [(c.entry_id, c.deliveries, c.fields) for c in taken.run] == [(ids[1], 1, {"n": "1"})]
    rows = redis_client.xpending_range(stream, "cpu", "-", "+", 10)
    assert [(r["message_id"].decode(), r["consumer"], r["times_delivered"]) for r in rows] == [
        (ids[1], b"alive", 2),
        (ids[2], b"dead", 1),
    ]  # the deleted entry acknowledged; the claimed one delivered once more
    redis_client.xack(stream, "cpu", ids[1])  # run and recorded
    redis_client.xclaim(stream, "cpu", "dead", 0, [ids[2]])
    taken = reclaimer.take()
    assert [(c.entry_id, c.deliveries) for c in taken.give_up] == [(ids[2], 2)]


# -- a killed worker's entries are taken back ------------------------------------------


@pytest.mark.parametrize("which", ["preprocess", "model"])
def test_entries_of_a_killed_worker_are_reclaimed_and_finished_once(
    which: str, redis_client: redis.Redis, redis_url: str, tmp_path: Path, procs: Procs
) -> None:
    gate = tmp_path / "gate"
    if which == "preprocess":  # the stage blocks until the gate opens: entries held, not acked
        doc = pipelines(prep="gated_vector", prep_params={"gate": str(gate)})
        stream, group = "cpu.sums.prep", keys.CPU_GROUP
        module, args = "workers.preprocess", ("--child",)
    else:  # predict blocks until the gate opens
        doc = pipelines("GatedSumModel", model_params={"gate": str(gate)})
        stream, group = "model.summer", keys.MODEL_GROUP
        module, args = "workers.model_main", ("--models", "summer")
    settings = make_settings(redis_url, tmp_path, doc)  # the first worker: the default lease
    config = load_pipelines(settings.pipelines_file)
    n = 5
    queue_job(redis_client, config.pipelines["sums"], "k1", [{"v": i} for i in range(n)])
    if which == "model":  # run the first stage here, by hand
        gate.touch()
        cpu = PreprocessWorker(Store(redis_client, config, settings.job_ttl_s), settings, "cpu-t")
        cpu.recover()
        while cpu.run_once(block_ms=1):
            pass
        gate.unlink()
    first = procs.start(settings, module, *args)
    wait_until(lambda: pending(redis_client, stream, group) == n, 60, f"the entries in hand\n{procs.logs()}")
    sigkill(first)
    [(dead, held)] = consumers(redis_client, stream, group).items()
    assert held == n
    gate.touch()
    later = short_lease(settings)
    if which == "preprocess":  # a second process, with a short lease
        procs.start(later, module, *args)
        _, cpu, model = thread_workers(redis_client, later)
        threads: tuple[Any, ...] = (model,)
    else:  # a second model worker in this process, with a short lease
        _, cpu, model = thread_workers(redis_client, later)
        threads = (cpu, model)
    with running(*threads):
        wait_until(lambda: is_final(redis_client, "k1"), 60, f"job k1 to finish\n{procs.logs()}")
    assert_done_once(redis_client, "k1", n)
    assert consumers(redis_client, stream, group).get(dead, 0) == 0


# -- a poison item ---------------------------------------------------------------------


def test_a_poison_item_is_given_up_after_max_deliveries_and_the_rest_go_on(
    redis_client: redis.Redis, redis_url: str, tmp_path: Path, procs: Procs
) -> None:
    notes = tmp_path / "attempts.txt"
    doc = pipelines(prep="vector_or_die", prep_params={"log": str(notes)})
    settings = short_lease(make_settings(redis_url, tmp_path, doc), max_deliveries=2)
    config = load_pipelines(settings.pipelines_file)
    inputs = [{"v": 0}, {"v": 1, "die": 1}, {"v": 2}, {"v": 3}]
    queue_job(redis_client, config.pipelines["sums"], "x1", inputs)
    procs.start(settings, "workers.preprocess", "--concurrency", "1")  # restarts a dead child
    _, _, model = thread_workers(redis_client, settings)
    with running(model):
        wait_until(lambda: is_final(redis_client, "x1"), 90, f"job x1 to finish\n{procs.logs()}")
    view = job_view(redis_client, "x1")
    assert view.status == JobStatus.succeeded
    assert (view.progress.done, view.progress.total) == (4, 4)
    assert [o.status.value for o in view.outputs] == ["succeeded", "failed", "succeeded", "succeeded"]
    reason = "given up after 2 deliveries: the item kept failing or killing its worker (stage 'prep')"
    assert view.outputs[1].error == reason
    assert [o.result["sum"] for o in view.outputs if o.result] == [0.0, 4.0, 6.0]
    [letter] = [fields_of(e) for e in redis_client.xrange(keys.DEADLETTER)]
    assert letter["deliveries"] == "2" and letter["reason"] == reason
    assert (letter["job"], letter["index"], letter["stage"]) == ("x1", "1", "prep")
    assert letter["stream"] == keys.stream("cpu.sums.prep") and letter["group"] == keys.CPU_GROUP
    assert notes.read_text().split().count("1") == 2  # the poison item ran exactly twice
    assert [fields_of(e)["job"] for e in redis_client.xrange(keys.EVENTS)] == ["x1"]
    assert pending(redis_client, "cpu.sums.prep", keys.CPU_GROUP) == 0
    assert re.search(r"exited unexpectedly, exit code 13, after .*; restarting in", procs.logs())


# -- the notifier ----------------------------------------------------------------------


def test_an_event_held_by_a_dead_notifier_is_delivered_by_the_next(
    redis_client: redis.Redis, redis_url: str, tmp_path: Path, procs: Procs, receiver: Receiver
) -> None:
    settings = short_lease(make_settings(redis_url, tmp_path, pipelines()))
    store, cpu, model = thread_workers(redis_client, settings)
    with running(cpu, model):
        queue_job(redis_client, store.config.pipelines["sums"], "e1", [{"v": 1}], webhook=receiver.url)
        wait_until(lambda: is_final(redis_client, "e1"), 30, "job e1 to finish")
    # A notifier took the completion event and died before it queued the delivery.
    redis_client.xgroup_create(keys.EVENTS, keys.NOTIFIER_GROUP, id="0")
    redis_client.xreadgroup(keys.NOTIFIER_GROUP, "n-dead", {keys.EVENTS: ">"})
    assert events_pending(redis_client) == 1
    procs.start(settings, "workers.notifier")
    wait_until(lambda: receiver.posts, 30, f"the event delivered by the next notifier\n{procs.logs()}")
    wait_until(lambda: events_pending(redis_client) == 0, 10, "the event acked")
    [(_, headers, body)] = receiver.posts
    assert json.loads(body)["data"]["id"] == "e1" and json.loads(body)["data"]["status"] == "succeeded"
    [(event_id, _)] = redis_client.xrange(keys.EVENTS)
    assert headers["webhook-id"] == f"msg_e1_{event_id.decode()}"  # the event's own delivery
