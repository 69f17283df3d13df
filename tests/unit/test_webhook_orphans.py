"""Deliveries left behind by a dead notifier: which rq jobs count as orphaned (pure), and how the
delivery's record takes an attempt cut short (shared/webhooks.py INTERRUPT, on fakeredis).
tests/integration/test_webhook_recovery.py runs the whole thing with real notifier processes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared import keys
from shared import webhooks as state
from shared.messages import now_ms
from shared.redis import scripts
from tests.support.webhooks import begin, finished_job, redeliver
from workers.webhooks.orphans import RqWorker, Running, orphaned, stuck, worker_dead

NOW = 1_000_000
TTL_MS = 2000
LIVE = NOW - 500  # a notifier heartbeat within the TTL
LAPSED = NOW - 2500


@pytest.mark.parametrize(
    ("worker", "beat", "dead"),
    [
        (RqWorker(exists=False), None, True),  # its hash expired (or was never written)
        (RqWorker(exists=True, died=True, notifier="n1"), LIVE, True),  # rq recorded its death
        (RqWorker(exists=True, notifier="n1"), LIVE, False),  # its notifier is alive
        (RqWorker(exists=True, notifier="n1"), NOW - TTL_MS, False),  # the last moment it counts as live
        (RqWorker(exists=True, notifier="n1"), LAPSED, True),  # its notifier's heartbeat lapsed
        (RqWorker(exists=True, notifier="n1"), None, True),  # its notifier left (or was forgotten)
        (RqWorker(exists=True), None, False),  # not a notifier's thread (`rq worker`): rq decides
    ],
)
def test_an_rq_worker_is_dead_when_rq_or_its_notifiers_heartbeat_says_so(
    worker: RqWorker, beat: float | None, dead: bool
) -> None:
    assert worker_dead(worker, beat, NOW, TTL_MS) is dead


def test_orphaned_jobs_are_the_started_ones_whose_worker_is_dead() -> None:
    running = [
        Running("a", "e1", "n1-0.0"),  # notifier n1 is alive
        Running("b", "e2", "n2-0.0"),  # notifier n2's heartbeat lapsed
        Running("c", "e3", "n2-1.0"),  # the same dead notifier, another thread
        Running("d", "e4", "gone-0.0"),  # no rq worker hash at all
        Running("e", "e5", ""),  # the execution's record expired: rq's clean-up takes it
        Running("f", "e6", "rq-cli"),  # a worker of other tools, alive to rq
    ]
    workers = {
        "n1-0.0": RqWorker(exists=True, notifier="n1"),
        "n2-0.0": RqWorker(exists=True, notifier="n2"),
        "n2-1.0": RqWorker(exists=True, notifier="n2"),
        "rq-cli": RqWorker(exists=True),
    }
    beats = {"n1": float(LIVE), "n2": float(LAPSED)}
    assert [r.job_id for r in orphaned(running, workers, beats, NOW, TTL_MS)] == ["b", "c", "d"]
    assert orphaned(running, workers, {"n1": LIVE, "n2": LIVE}, NOW, TTL_MS) == [running[3]]


def test_a_job_taken_and_not_started_is_stuck_once_it_stays_so_for_the_grace() -> None:
    found, seen = stuck(["a", "b"], {"b"}, {}, 100.0, 2.0)  # b is started: a worker has it
    assert (found, seen) == ([], {"a": 100.0})
    found, seen = stuck(["a", "c"], set(), seen, 101.0, 2.0)
    assert (found, seen) == ([], {"a": 100.0, "c": 101.0})
    found, seen = stuck(["a", "c"], set(), seen, 102.0, 2.0)
    assert (found, seen) == (["a"], {"a": 100.0, "c": 101.0})
    found, seen = stuck(["c"], {"c"}, seen, 110.0, 2.0)  # a is gone, c started after all
    assert (found, seen) == ([], {})


# -- the delivery's record (INTERRUPT) ---------------------------------------------------------


def interrupt(client: Any, delivery: str, round_: int, give_up: bool = False) -> int:
    return client.eval(
        scripts.WEBHOOK_INTERRUPT,
        2,
        keys.webhook(delivery),
        keys.webhook_attempts(delivery),
        round_,
        now_ms(),
        3600,
        "1" if give_up else "0",
    )


def record(client: Any, delivery: str) -> tuple[dict[str, str], list[dict[str, Any]]]:
    fields = state.decode(client.hgetall(keys.webhook(delivery)))
    return fields, [json.loads(a) for a in client.lrange(keys.webhook_attempts(delivery), 0, -1)]


def test_an_attempt_cut_by_a_dead_notifier_is_recorded_once_and_sent_again(client: Any) -> None:
    delivery = finished_job(client)
    assert begin(client, delivery, 1)[:2] == ["go", "0"]
    started_at = client.hget(keys.webhook(delivery), "started_at")
    assert interrupt(client, delivery, 1) == 1
    fields, attempts = record(client, delivery)
    assert attempts == [
        {"at": int(started_at), "status_code": None, "duration_ms": None, "error": state.INTERRUPTED}
    ]
    assert fields["state"] == "pending" and fields["last_error"] == state.INTERRUPTED
    assert (fields["attempts"], fields["tries"]) == ("1", "1") and "started_at" not in fields
    assert fields["next_attempt_at"]  # due now
    assert interrupt(client, delivery, 1) == 0  # nothing in flight any more: nothing added
    # The rq job runs again: the same round, no second record of the cut attempt.
    assert begin(client, delivery, 1)[:2] == ["go", "1"]
    assert len(record(client, delivery)[1]) == 1


def test_a_notifier_that_died_before_an_attempt_or_after_recording_it_adds_nothing(client: Any) -> None:
    delivery = finished_job(client)
    assert interrupt(client, delivery, 1) == 0  # pending: no attempt began
    assert record(client, delivery)[0]["state"] == "pending" and record(client, delivery)[1] == []
    begin(client, delivery, 1)
    assert interrupt(client, delivery, 2) == 0  # another round's rq job: not this one
    client.hset(keys.webhook(delivery), "state", "succeeded")  # FINISH ran, rq had not noted it
    client.hdel(keys.webhook(delivery), "started_at")
    assert interrupt(client, delivery, 1) == 0
    assert record(client, delivery)[0]["state"] == "succeeded"
    assert interrupt(client, "msg_nope_1-0", 1) == 0


def test_an_attempt_cut_with_no_crash_retry_left_dead_letters_the_delivery(client: Any) -> None:
    delivery = finished_job(client)
    begin(client, delivery, 1)
    assert interrupt(client, delivery, 1, give_up=True) == 1
    fields, attempts = record(client, delivery)
    assert fields["state"] == "dead" and fields["next_attempt_at"] == ""
    assert [a["error"] for a in attempts] == [state.INTERRUPTED]
    assert redeliver(client, delivery)[0] == "1"  # dead: the API may start a new round
