"""A notifier that dies mid-delivery: real notifier processes, SIGKILLed or failing, real
redis-server, receivers on 127.0.0.1 only.

Its deliveries are queued again within seconds by whichever notifier looks first (once, however
many look), sent with the same `webhook-id`, and the cut attempt shows in GET /v1/jobs/{id}; a
notifier one of whose threads dies exits 1 within seconds instead of lingering.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import redis
from rq.job import Job
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer

from shared import keys
from shared import webhooks as state
from shared.heartbeat import live_since
from shared.messages import now_ms
from shared.settings import Settings
from tests.support.hooks import (
    Hook,
    Rig,
    delivery_queue,
    finish_job,
    rq_idle,
    settings_for,
    start_hook,
    wait_state,
)
from tests.support.waiting import wait_until
from workers import notifier
from workers.notifier import Notifier
from workers.webhooks import rqthreads
from workers.webhooks.orphans import Recovery

# rq alone would send a cut delivery again only after the attempt's timeout plus 70 s
# (rqthreads.job_timeout_s, the execution's heartbeat) and its crash-retry interval: minutes.
PROMPT_S = 15


def recovery_settings(rig: Rig, **more: Any) -> Settings:
    return settings_for(
        rig.redis_url,
        rig.tmp_path,
        worker_ttl_ms=1000,
        heartbeat_interval_ms=200,
        webhook_timeout_s=30,
        **more,
    )


def cut_delivery(rig: Rig, settings: Settings, hook: Hook, job_id: str) -> str:
    """A notifier process POSTs `job_id`'s completion webhook and is SIGKILLed while the receiver
    holds its answer; the receiver then answers (the cut POST to nobody, later ones at once).
    Returns the delivery id."""
    hook.hold.clear()
    victim = rig.procs.start(settings, "workers.notifier")
    finish_job(rig.client, settings, job_id, hook.url)
    wait_until(lambda: hook.posts, 30, f"the first POST\n{rig.procs.logs()}")
    victim.kill()
    victim.wait(10)
    hook.hold.set()
    return rig.client.hget(keys.job_webhook(job_id), "completed").decode()


def no_live_notifier(client: redis.Redis, settings: Settings) -> bool:
    return not client.zrangebyscore(keys.WORKERS, live_since(now_ms(), settings.worker_ttl_ms), "+inf")


def attempts_of(shown: dict[str, Any]) -> list[tuple[int | None, str | None]]:
    return [(a["status_code"], a["error"]) for a in shown["attempts"]]


def test_a_delivery_cut_by_a_notifier_kill_is_sent_again_within_seconds_with_the_same_id(rig: Rig) -> None:
    hook = start_hook(rig.hooks)
    settings = recovery_settings(rig)
    delivery = cut_delivery(rig, settings, hook, "k1")
    killed = time.monotonic()
    for _ in range(2):  # two notifiers look for it
        rig.procs.start(settings, "workers.notifier")
    shown = wait_state(rig.api, "k1", "succeeded", PROMPT_S, f"the redelivery\n{rig.procs.logs()}")
    took_s = time.monotonic() - killed
    wait_until(lambda: rq_idle(rig.client), 10, "rq to have nothing left for it")
    assert attempts_of(shown) == [(None, state.INTERRUPTED), (204, None)], shown
    assert [headers["webhook-id"] for _, headers, _ in hook.posts] == [delivery, delivery]
    assert [m["data"]["id"] for m in hook.verified()] == ["k1", "k1"]
    assert rig.procs.logs().count("its notifier died (rq worker") == 1, rig.procs.logs()  # queued once
    assert took_s < PROMPT_S


def test_a_retry_scheduled_before_its_notifier_died_is_sent_on_time_by_the_next_one(rig: Rig) -> None:
    # The dead notifier held rq's scheduler lock (a minute's TTL, and rq asks again only every
    # two minutes): the next notifier takes over a lock whose holder's heartbeat has lapsed.
    hook = start_hook(rig.hooks, (500, {}), (204, {}))
    settings = recovery_settings(rig, webhook_retry_schedule_s="0,3")
    victim = rig.procs.start(settings, "workers.notifier")
    finish_job(rig.client, settings, "k9", hook.url)
    wait_state(rig.api, "k9", "failed", 30, f"the first attempt to fail\n{rig.procs.logs()}")
    lock_key = rqthreads.RQScheduler.get_locking_key(keys.WEBHOOK_QUEUE)
    assert rig.client.get(lock_key).decode().startswith(rqthreads.SCHEDULER_PREFIX)  # the victim's
    victim.kill()
    victim.wait(10)
    killed = time.monotonic()
    rig.procs.start(settings, "workers.notifier")
    shown = wait_state(rig.api, "k9", "succeeded", PROMPT_S, f"the retry\n{rig.procs.logs()}")
    assert attempts_of(shown) == [(500, "HTTP 500"), (204, None)], shown
    assert len(hook.posts) == 2 and hook.posts[1][0] - killed < PROMPT_S
    assert "released the lock of dlpipe-notifier:" in rig.procs.logs()


def test_one_notifier_queues_an_orphan_however_many_look_at_once(rig: Rig) -> None:
    hook = start_hook(rig.hooks)
    settings = recovery_settings(rig)
    delivery = cut_delivery(rig, settings, hook, "k2")
    wait_until(lambda: no_live_notifier(rig.client, settings), 10, "the dead notifier's heartbeat to lapse")
    clients = [redis.Redis.from_url(rig.redis_url) for _ in range(8)]
    lookers = [Recovery(c, rqthreads.delivery_queue(c), settings) for c in clients]
    barrier = threading.Barrier(len(lookers))
    queued: list[int] = []

    def look(recovery: Recovery) -> None:
        barrier.wait()
        queued.append(recovery.run_once())

    threads = [threading.Thread(target=look, args=(r,)) for r in lookers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    queue = delivery_queue(rig.client)
    assert sorted(queued) == [0] * 7 + [1]
    assert queue.job_ids == [state.rq_job_id(delivery, 1)] and queue.started_job_registry.count == 0
    assert [r.run_once() for r in lookers[:2]] == [0, 0]  # nothing left to take
    shown = rig.api.get("/v1/jobs/k2").json()["webhook"]
    assert shown["state"] == "pending" and attempts_of(shown) == [(None, state.INTERRUPTED)]
    rig.procs.start(settings, "workers.notifier")
    shown = wait_state(rig.api, "k2", "succeeded", PROMPT_S, f"the redelivery\n{rig.procs.logs()}")
    assert attempts_of(shown) == [(None, state.INTERRUPTED), (204, None)]
    assert {headers["webhook-id"] for _, headers, _ in hook.posts} == {delivery} and len(hook.posts) == 2
    for c in clients:
        c.close()


def test_a_delivery_whose_crash_retries_are_spent_is_dead_lettered(rig: Rig) -> None:
    hook = start_hook(rig.hooks)
    settings = recovery_settings(rig)
    delivery = cut_delivery(rig, settings, hook, "k3")
    rq_id = state.rq_job_id(delivery, 1)
    rig.client.hset(Job.key_for(rq_id), "retries_left", 0)  # cut as often as rq retries a crash
    wait_until(lambda: no_live_notifier(rig.client, settings), 10, "the dead notifier's heartbeat to lapse")
    assert Recovery(rig.client, rqthreads.delivery_queue(rig.client), settings).run_once() == 1
    shown = rig.api.get("/v1/jobs/k3").json()["webhook"]
    assert shown["state"] == "dead" and attempts_of(shown) == [(None, state.INTERRUPTED)]
    failed = FailedJobRegistry(keys.WEBHOOK_QUEUE, connection=rig.client, serializer=JSONSerializer)
    assert failed.get_job_ids() == [rq_id] and rq_idle(rig.client)
    assert rig.api.post("/v1/jobs/k3/webhook/redeliver").status_code == 202  # a new round may start


def test_a_delivery_taken_off_the_queue_by_a_worker_that_died_before_starting_it_is_sent(rig: Rig) -> None:
    hook = start_hook(rig.hooks)
    settings = recovery_settings(rig)
    finish_job(rig.client, settings, "t1", hook.url)  # no notifier yet: its event waits
    queue = rqthreads.delivery_queue(rig.client)

    def enqueue(job_id: str, delivery: str, round_: int, delay_s: float) -> bool:
        return rqthreads.enqueue(queue, job_id, delivery, round_, delay_s, 30, settings.job_ttl_s)

    events = Notifier(rig.client, settings, "n-test", enqueue)  # the events consumer alone
    events.recover()
    assert events.run_once(block_ms=100) == 1
    [rq_id] = queue.job_ids
    # What rq's dequeue does (BLMOVE to its intermediate queue); the worker dies right there.
    assert rig.client.lmove(queue.key, queue.intermediate_queue_key) == rq_id.encode()
    rig.procs.start(settings, "workers.notifier")
    shown = wait_state(rig.api, "t1", "succeeded", PROMPT_S, f"the delivery\n{rig.procs.logs()}")
    assert attempts_of(shown) == [(204, None)] and len(hook.posts) == 1  # no attempt was cut
    assert "never started it; queued again" in rig.procs.logs()
    wait_until(lambda: rq_idle(rig.client) and not rig.client.llen(queue.intermediate_queue_key), 10, "")


@pytest.mark.parametrize("thread", ["events", "rq-scheduler", "webhook-recovery", "rq-worker-0"])
def test_a_notifier_whose_thread_dies_exits_1_within_seconds_and_its_delivery_is_sent_again(
    thread: str, rig: Rig
) -> None:
    hook = start_hook(rig.hooks)
    hook.hold.clear()  # a delivery in flight all along: the receiver holds its answer
    settings = recovery_settings(rig, webhook_concurrency=2)
    trigger = rig.tmp_path / "die"
    failing = rig.procs.start(settings, "tests.notifier_crash", thread, str(trigger))
    finish_job(rig.client, settings, "c1", hook.url)
    wait_until(lambda: hook.posts, 30, f"the first POST\n{rig.procs.logs()}")
    trigger.touch()
    died = time.monotonic()
    assert failing.wait(timeout=notifier.WATCH_S + notifier.FAIL_GRACE_S + 10) == 1
    took_s = time.monotonic() - died
    log = rig.procs.log(failing)
    assert f"thread {thread} died" in log and f"injected failure of thread {thread}" in log, log
    assert f"notifier thread {thread} died; exiting 1" in log, log
    assert took_s < notifier.WATCH_S + notifier.FAIL_GRACE_S + 3, log  # not the 30 s attempt, nor 60 s joins
    hook.hold.set()
    rig.procs.start(settings, "workers.notifier")
    shown = wait_state(rig.api, "c1", "succeeded", PROMPT_S, f"the redelivery\n{rig.procs.logs()}")
    assert attempts_of(shown) == [(None, state.INTERRUPTED), (204, None)]
