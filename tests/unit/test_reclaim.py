"""Reclaiming and giving up entries: the pure decisions, then the steps on fakeredis.

fakeredis answers XAUTOCLAIM as Redis 7 does; tests/integration/test_reclaim.py runs the
claim script on the real (6.2) redis-server as well.
"""

from __future__ import annotations

import threading
from typing import Any

import torch

from shared import keys
from shared.backoff import Backoff
from shared.messages import JobStatus
from shared.pipeline_spec import parse_pipelines
from shared.settings import Settings
from tests.stagefns import job_view, pipelines, queue_job
from tests.support.clock import FakeClock
from workers import runtime
from workers.inference import load_models
from workers.model_worker import ModelWorker
from workers.notifier import Notifier
from workers.preprocess import PreprocessWorker
from workers.reclaim import (
    Claimed,
    Reclaimer,
    Schedule,
    dead_letter_fields,
    give_up_reason,
    must_give_up,
    parse_claim_reply,
    split,
)
from workers.store import StageResult, Store

SETTINGS = Settings(redis_url="redis://unused", read_block_ms=1, max_deliveries=2)
PREP = keys.stream("cpu.sums.prep")


def make_store(client: Any) -> Store:
    return Store(client, parse_pipelines(pipelines()), ttl_s=3600)


def no_lease(worker: Any) -> Any:
    """Entries count as idle at once (fakeredis idle times are real milliseconds)."""
    worker.reclaimer.lease_ms = 0
    return worker


def deliver_to(client: Any, stream: str, group: str, consumer: str, times: int = 1) -> list[str]:
    """A worker `consumer` takes every new entry of `stream`, `times` deliveries in all, and dies."""
    reply = client.xreadgroup(group, consumer, {stream: ">"})
    ids = [entry_id.decode() for _, messages in reply for entry_id, _ in messages]
    for _ in range(times - 1):
        client.xclaim(stream, group, consumer, 0, ids)
    return ids


def deliveries(client: Any, stream: str, group: str, entry_id: str) -> int:
    return client.xpending_range(stream, group, entry_id, entry_id, 1)[0]["times_delivered"]


# -- pure decisions --------------------------------------------------------------------


def test_entries_are_given_up_once_delivered_max_deliveries_times() -> None:
    assert [must_give_up(n, 3) for n in (1, 2, 3, 4)] == [False, False, True, True]
    claimed = [Claimed("s", f"{n}-0", n, {}) for n in (1, 2, 3)]
    taken = split(claimed, 2)
    assert [c.deliveries for c in taken.run] == [1] and [c.deliveries for c in taken.give_up] == [2, 3]
    reason = give_up_reason(3, "stage 'decode'")
    assert (
        reason == "given up after 3 deliveries: the item kept failing or killing its worker (stage 'decode')"
    )


def test_dead_letter_fields_keep_the_entry_and_say_why() -> None:
    claimed = Claimed("dlpipe:stream:x", "5-1", 2, {"job": "j", "index": "0"})
    assert dead_letter_fields(claimed, "cpu", "why") == {
        "job": "j",
        "index": "0",
        "stream": "dlpipe:stream:x",
        "entry_id": "5-1",
        "group": "cpu",
        "deliveries": "2",
        "reason": "why",
    }


def test_claim_replies_parse_with_and_without_deleted_ids() -> None:
    reply = [b"7-0", [[b"5-0", 1, [b"job", b"j", b"index", b"3"]]], [b"4-0"]]
    cursor, claimed, deleted = parse_claim_reply("s", reply)
    assert cursor == "7-0" and deleted == ["4-0"]
    assert claimed == [Claimed("s", "5-0", 1, {"job": "j", "index": "3"})]
    assert parse_claim_reply("s", [b"0-0", []]) == ("0-0", [], [])


def test_the_scan_is_due_at_start_then_every_interval() -> None:
    clock = FakeClock()
    schedule = Schedule(0.25, clock)
    assert schedule.due()
    schedule.scanned()
    clock.now += 0.2
    assert not schedule.due()
    clock.now += 0.05
    assert schedule.due()


# -- the reclaimer on fakeredis --------------------------------------------------------


def test_idle_entries_of_a_dead_consumer_are_claimed_one_at_a_time(client: Any) -> None:
    client.xgroup_create(PREP, "cpu", id="0", mkstream=True)
    sent = [client.xadd(PREP, {"n": str(i)}).decode() for i in range(3)]
    deliver_to(client, PREP, "cpu", "dead")
    clock = FakeClock()
    reclaimer = Reclaimer(client, "cpu", "alive", [PREP], lease_ms=0, max_deliveries=3, clock=clock)
    reclaimer.schedule.interval_s = 0.5  # (lease / 2, for a lease of 1 s)
    got = [reclaimer.take().run for _ in range(3)]
    assert [[c.entry_id for c in run] for run in got] == [[i] for i in sent]
    assert all(run[0].deliveries == 1 for run in got)
    assert [deliveries(client, PREP, "cpu", i) for i in sent] == [2, 2, 2]  # each claim: one more
    owners = {row["consumer"] for row in client.xpending_range(PREP, "cpu", "-", "+", 10)}
    assert owners == {b"alive"}
    assert len(reclaimer.take()) == 0  # the scan is over: not due again yet
    clock.now += 1.0
    assert len(reclaimer.take().run) == 1  # due again (lease 0: anything pending is idle)


def test_entries_held_less_than_the_lease_are_left_alone(client: Any) -> None:
    client.xgroup_create(PREP, "cpu", id="0", mkstream=True)
    client.xadd(PREP, {"n": "1"})
    deliver_to(client, PREP, "cpu", "busy")
    reclaimer = Reclaimer(client, "cpu", "alive", [PREP], lease_ms=60_000, max_deliveries=3)
    assert len(reclaimer.take()) == 0
    assert client.xpending_range(PREP, "cpu", "-", "+", 10)[0]["consumer"] == b"busy"


def test_a_deleted_pending_entry_is_acknowledged_not_run(client: Any) -> None:
    client.xgroup_create(PREP, "cpu", id="0", mkstream=True)
    gone, kept = (client.xadd(PREP, {"n": str(i)}).decode() for i in range(2))
    deliver_to(client, PREP, "cpu", "dead")
    client.xdel(PREP, gone)
    reclaimer = Reclaimer(client, "cpu", "alive", [PREP], lease_ms=0, max_deliveries=3)
    assert [c.entry_id for c in reclaimer.take().run] == [kept]
    assert [r["message_id"].decode() for r in client.xpending_range(PREP, "cpu", "-", "+", 10)] == [kept]


def test_own_unfinished_entries_are_taken_back_unless_someone_else_has_them(client: Any) -> None:
    client.xgroup_create(PREP, "cpu", id="0", mkstream=True)
    first, second = (client.xadd(PREP, {"n": str(i)}).decode() for i in range(2))
    deliver_to(client, PREP, "cpu", "me")
    reclaimer = Reclaimer(client, "cpu", "me", [PREP], lease_ms=60_000, max_deliveries=3)
    assert reclaimer.adopt_own() == 2
    client.xclaim(PREP, "cpu", "other", 0, [second])  # taken over meanwhile
    assert [c.entry_id for c in reclaimer.take().run] == [first]
    assert len(reclaimer.take()) == 0
    assert deliveries(client, PREP, "cpu", first) == 2


# -- giving up, through each worker ----------------------------------------------------


def test_preprocess_gives_up_a_poison_entry_and_the_job_completes_once(client: Any) -> None:
    store = make_store(client)
    queue_job(client, store.config.pipelines["sums"], "p1", [{"v": 1}, {"v": 2}, {"v": 3}])
    PreprocessWorker(store, SETTINGS, "setup").setup()
    ids = deliver_to(client, PREP, keys.CPU_GROUP, "dead")
    client.xclaim(PREP, keys.CPU_GROUP, "dead", 0, [ids[1]])  # item 1: delivered twice already
    cpu = no_lease(PreprocessWorker(store, SETTINGS, "cpu-1"))
    cpu.recover()
    model = ModelWorker(store, SETTINGS, "gpu-1", load_models(store.config, ["summer"], torch.device("cpu")))
    model.recover()
    while cpu.run_once() + model.run_once():
        pass
    view = job_view(client, "p1")
    assert view.status == JobStatus.succeeded and (view.progress.done, view.progress.total) == (3, 3)
    assert [o.status.value for o in view.outputs] == ["succeeded", "failed", "succeeded"]
    reason = "given up after 2 deliveries: the item kept failing or killing its worker (stage 'prep')"
    assert view.outputs[1].error == reason
    [(_, letter)] = client.xrange(keys.DEADLETTER)
    assert {k.decode(): v.decode() for k, v in letter.items()} == {
        "job": "p1",
        "index": "1",
        "pipeline": "sums",
        "stage": "prep",
        "stream": PREP,
        "entry_id": ids[1],
        "group": keys.CPU_GROUP,
        "deliveries": "2",
        "reason": reason,
    }
    assert client.xlen(keys.EVENTS) == 1
    assert client.xpending(PREP, keys.CPU_GROUP)["pending"] == 0


def test_giving_up_an_entry_acknowledged_meanwhile_changes_nothing(client: Any) -> None:
    store = make_store(client)
    queue_job(client, store.config.pipelines["sums"], "p2", [{"v": 1}])
    PreprocessWorker(store, SETTINGS, "setup").setup()
    [entry] = store.read(keys.CPU_GROUP, "slow", ["cpu.sums.prep"], 8, None)
    client.xack(PREP, keys.CPU_GROUP, entry.entry_id)  # the slow worker finished it after all
    claimed = Claimed(PREP, entry.entry_id, 3, {"job": "p2"})
    give_up = StageResult(entry, error="given up", dead_letter=dead_letter_fields(claimed, "cpu", "x"))
    assert store.complete(keys.CPU_GROUP, [give_up]) == [0]
    assert client.xlen(keys.DEADLETTER) == 0
    assert job_view(client, "p2").outputs[0].status.value == "pending"


def test_a_batch_that_keeps_raising_is_given_up_after_max_deliveries(client: Any) -> None:
    """Not a per-item error: the step itself raises, the loop recovers and re-runs, each
    re-run a delivery more, until the entries are dead-lettered and the job completes."""
    store = make_store(client)
    settings = SETTINGS.model_copy(update={"max_deliveries": 3})
    queue_job(client, store.config.pipelines["sums"], "p3", [{"v": 1}, {"v": 2}])
    cpu = PreprocessWorker(store, settings, "cpu-1")
    cpu.recover()
    cpu.run_once()
    model = ModelWorker(store, settings, "gpu-1", load_models(store.config, ["summer"], torch.device("cpu")))

    def broken(*_: Any) -> Any:
        raise RuntimeError("a bug outside the per-item handling")

    model._check_shapes = broken  # type: ignore[method-assign]
    stop, steps = threading.Event(), []

    def step() -> None:
        steps.append(1)
        if len(steps) > 50 or runtime_final(client, "p3"):
            stop.set()
            return
        model.run_once()
        cpu.run_once()

    runtime.run_loop("test", step, stop, recover=model.recover, backoff=Backoff(0.001, 0.001))
    assert len(steps) <= 50, "the batch was re-run forever"
    view = job_view(client, "p3")
    assert view.status == JobStatus.failed and view.progress.done == 2
    assert [o.error for o in view.outputs] == [
        "given up after 3 deliveries: the item kept failing or killing its worker (stage 'infer')"
    ] * 2
    letters = client.xrange(keys.DEADLETTER)
    assert sorted(fields[b"index"] for _, fields in letters) == [b"0", b"1"]
    assert {fields[b"deliveries"] for _, fields in letters} == {b"3"}
    assert client.xpending(keys.stream("model.summer"), keys.MODEL_GROUP)["pending"] == 0


def runtime_final(client: Any, job_id: str) -> bool:
    return client.hget(keys.job(job_id), "status") in (b"succeeded", b"failed", b"canceled")


def test_the_notifier_delivers_an_event_a_dead_notifier_held(client: Any) -> None:
    store = make_store(client)
    queue_job(client, store.config.pipelines["sums"], "n1", [{"v": 1}], webhook="http://127.0.0.1:9/h")
    queue_job(client, store.config.pipelines["sums"], "n2", [{"v": 1}], webhook="http://127.0.0.1:9/h")
    cpu = PreprocessWorker(store, SETTINGS, "cpu-1")
    cpu.recover()
    model = ModelWorker(store, SETTINGS, "gpu-1", load_models(store.config, ["summer"], torch.device("cpu")))
    model.recover()
    while cpu.run_once() + model.run_once():
        pass
    calls: list[str] = []

    def enqueue(job_id: str, delivery: str, round_: int, delay_s: float) -> bool:
        calls.append(job_id)
        return True

    notifier = no_lease(Notifier(client, SETTINGS, "n-alive", enqueue))
    notifier.setup()
    held, poison = deliver_to(client, keys.EVENTS, keys.NOTIFIER_GROUP, "n-dead")
    client.xclaim(keys.EVENTS, keys.NOTIFIER_GROUP, "n-dead", 0, [poison])  # delivered twice
    notifier.recover()
    while notifier.run_once():
        pass
    assert calls == ["n1"]  # the held event's delivery queued; the one delivered max_deliveries times not
    assert client.xpending(keys.EVENTS, keys.NOTIFIER_GROUP)["pending"] == 0
    [(_, letter)] = client.xrange(keys.DEADLETTER)
    assert letter[b"job"] == b"n2" and letter[b"entry_id"] == poison.encode()
    assert letter[b"deliveries"] == b"2" and b"the event kept failing" in letter[b"reason"]
    assert held != poison
