"""Webhooks end to end: real notifier processes (rq inside), real redis-server, receivers on
127.0.0.1 only, every delivery checked by `standardwebhooks`, the state read through the API.

No traffic leaves 127.0.0.0/8: webhook URLs are loopback addresses in various spellings, and
with the SSRF guard on they must never be connected to.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import redis
from fastapi.testclient import TestClient
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer

from services.api.app import create_app
from shared import keys
from shared.embedded_redis import free_port
from shared.netguard import AddressPolicy
from tests.stagefns import queue_job
from tests.support.hooks import (
    Hook,
    Rig,
    finish_job,
    rq_idle,
    settings_for,
    start_hook,
    wait_state,
    webhook_of,
)
from tests.support.procs import Procs
from tests.support.waiting import wait_until
from tests.support.workers import is_final, running, thread_workers
from workers.webhooks import signing
from workers.webhooks.delivery import Sender


def test_a_receiver_that_fails_twice_then_succeeds_gets_one_verified_delivery(rig: Rig) -> None:
    hook = start_hook(rig.hooks, (500, {}), (500, {}), (204, {}))
    settings = settings_for(rig.redis_url, rig.tmp_path)
    rig.procs.start(settings, "workers.notifier")
    finish_job(rig.client, settings, "f1", hook.url)
    shown = wait_state(rig.api, "f1", "succeeded", 30, f"the delivery to succeed\n{rig.procs.logs()}")
    wait_until(lambda: rq_idle(rig.client), 10, "rq to have nothing left for it")
    messages = hook.verified()
    assert len(messages) == 3 and all(m["type"] == "job.completed" for m in messages)
    assert [m["data"]["status"] for m in messages] == ["succeeded"] * 3
    ids = {headers["webhook-id"] for _, headers, _ in hook.posts}
    assert ids == {shown["id"]} and shown["id"].startswith("msg_f1_")  # one id, every retry
    gaps = [b[0] - a[0] for a, b in zip(hook.posts, hook.posts[1:])]
    assert all(gap >= 0.9 for gap in gaps), gaps  # the schedule is 0,1,1
    assert [a["status_code"] for a in shown["attempts"]] == [500, 500, 204]
    assert shown["last_status_code"] == 204 and shown["next_attempt_at"] is None
    # rq's own tools see the deliveries (JSON-serialized jobs, rq workers named after the notifier)
    info = subprocess.run(
        [str(Path(sys.executable).with_name("rq")), "info", "--url", rig.redis_url, "--serializer", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert keys.WEBHOOK_QUEUE in info.stdout and "workers" in info.stdout
    assert len(hook.posts) == 3


def test_a_receiver_that_is_down_is_dead_lettered_and_redelivered_once_it_is_up(rig: Rig) -> None:
    port = free_port()  # nothing listens there yet: connections are refused
    url = f"http://127.0.0.1:{port}/hook"
    settings = settings_for(rig.redis_url, rig.tmp_path)
    rig.procs.start(settings, "workers.notifier")
    finish_job(rig.client, settings, "d1", url)
    dead = wait_state(rig.api, "d1", "dead", 30, f"the delivery to be dead-lettered\n{rig.procs.logs()}")
    assert len(dead["attempts"]) == 3
    assert all(a["status_code"] is None and "cannot connect" in a["error"] for a in dead["attempts"])
    assert dead["last_error"].startswith("cannot connect") and dead["next_attempt_at"] is None
    failed = FailedJobRegistry(keys.WEBHOOK_QUEUE, connection=rig.client, serializer=JSONSerializer)
    # rq's failed registry holds it too: rq moves it there once the attempt has raised, just
    # after the attempt recorded the delivery as dead
    wait_until(lambda: failed.get_job_ids() == [f"{dead['id']}_r1"], 10, "rq's failed registry to hold it")
    hook = start_hook(rig.hooks, port=port)
    response = rig.api.post("/v1/jobs/d1/webhook/redeliver")
    assert response.status_code == 202, response.text
    assert response.json()["state"] == "pending"
    wait_until(lambda: hook.posts, 30, f"the redelivery\n{rig.procs.logs()}")
    again = wait_state(rig.api, "d1", "succeeded", 10, "the redelivery's success")
    [message] = hook.verified()
    assert message["data"]["id"] == "d1" and hook.posts[0][1]["webhook-id"] == dead["id"]
    assert [a["status_code"] for a in again["attempts"]] == [None, None, None, 204]
    # succeeded, so not in flight: 429 within DLPIPE_WEBHOOK_REDELIVER_INTERVAL_S of the last, else 202
    assert rig.api.post("/v1/jobs/d1/webhook/redeliver").status_code in (202, 429)


class Listener:
    """A TCP listener on 127.0.0.1 that counts the connections it accepts (and answers nothing)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


SPELLINGS = ["127.0.0.1", "127.1", "0x7f000001", "2130706433", "0177.0.0.1", "[::ffff:127.0.0.1]", "[::1]"]


def test_loopback_spellings_are_refused_with_the_guard_on_and_nothing_connects(
    redis_client: redis.Redis, redis_url: str, tmp_path: Path, procs: Procs
) -> None:
    listener = Listener()
    try:
        guarded = settings_for(redis_url, tmp_path, webhook_allow_private=False)
        urls = [f"http://{host}:{listener.port}/hook" for host in SPELLINGS]
        with TestClient(create_app(guarded)) as api:  # at submit: 422
            for url in urls:
                body = {"inputs": [{"image_base64": "AAAA"}], "webhook": url}
                response = api.post("/v1/pipelines/sums/jobs", json=body)
                assert response.status_code == 422, (url, response.text)
                assert response.json()["field"] == "webhook"
        # Jobs that got past the API some other way are refused by the notifier, on every attempt.
        procs.start(guarded, "workers.notifier")
        store, cpu, model = thread_workers(redis_client, guarded)
        with running(cpu, model):
            for n, url in enumerate(urls):
                queue_job(redis_client, store.config.pipelines["sums"], f"g{n}", [{"v": 1}], webhook=url)
            with TestClient(create_app(guarded)) as api:

                def all_dead() -> list[dict[str, Any]] | None:
                    views = [webhook_of(api, f"g{n}") for n in range(len(urls))]
                    return views if all(v["state"] == "dead" for v in views) else None

                states = wait_until(all_dead, 30, f"every delivery refused\n{procs.logs()}")
        for url, hook in zip(urls, states):
            [only] = hook["attempts"]  # refused: no retry can help
            assert only["status_code"] is None and "refused" in only["error"], (url, only)
            assert "DLPIPE_WEBHOOK_ALLOW_PRIVATE" in only["error"]
        assert listener.accepted == 0
    finally:
        listener.close()


def test_events_are_delivered_as_each_job_asked(
    redis_client: redis.Redis, redis_url: str, tmp_path: Path, procs: Procs, hooks: list[Hook]
) -> None:
    hook = start_hook(hooks)
    settings = settings_for(redis_url, tmp_path)
    procs.start(settings, "workers.notifier")
    store, cpu, model = thread_workers(redis_client, settings)
    sums = store.config.pipelines["sums"]
    asked = {"all": ["started", "progress", "completed"], "default": None, "started": ["started"]}
    with running(cpu, model):
        for job_id, events in asked.items():
            queue_job(
                redis_client,
                sums,
                job_id,
                [{"v": i} for i in range(4)],
                webhook=hook.url,
                webhook_events=events,
            )
        wait_until(lambda: all(is_final(redis_client, j) for j in asked), 30, "the jobs to finish")
    wait_until(
        lambda: (
            redis_client.xpending(keys.EVENTS, keys.NOTIFIER_GROUP)["pending"] == 0
            and rq_idle(redis_client)
            and len(hook.posts) >= 4
        ),
        30,
        f"every event handled and delivered\n{procs.logs()}",
    )
    got: dict[str, list[dict[str, Any]]] = {}
    for message in hook.verified():
        got.setdefault(message["data"]["id"], []).append(message)
    kinds = {job: sorted(m["type"] for m in messages) for job, messages in got.items()}
    assert kinds["default"] == ["job.completed"] and kinds["started"] == ["job.started"]
    assert kinds["all"][0] == "job.completed" and kinds["all"][-1] == "job.started"
    progress = sorted(m["timestamp"] for m in got["all"] if m["type"] == "job.progress")
    assert 1 <= len(progress) <= 3  # 4 items: at most one a second, never for the last one
    ids = [headers["webhook-id"] for _, headers, _ in hook.posts]
    assert len(ids) == len(set(ids))  # one delivery per event


def test_retry_after_is_honoured(
    redis_client: redis.Redis, redis_url: str, tmp_path: Path, procs: Procs, hooks: list[Hook]
) -> None:
    hook = start_hook(hooks, (503, {"Retry-After": "3"}), (204, {}))
    settings = settings_for(redis_url, tmp_path)
    procs.start(settings, "workers.notifier")
    finish_job(redis_client, settings, "r1", hook.url)
    wait_until(lambda: len(hook.posts) == 2, 30, f"the retry\n{procs.logs()}")
    assert hook.posts[1][0] - hook.posts[0][0] >= 3.0  # not the schedule's 1 s
    assert {h["webhook-id"] for _, h, _ in hook.posts} == {hook.posts[0][1]["webhook-id"]}


def test_a_slow_receiver_does_not_hold_up_other_deliveries(
    redis_client: redis.Redis, redis_url: str, tmp_path: Path, procs: Procs, hooks: list[Hook]
) -> None:
    slow, fast = start_hook(hooks), start_hook(hooks)
    slow.hold.clear()  # answers nothing until released
    settings = settings_for(redis_url, tmp_path, webhook_concurrency=2, webhook_timeout_s=20)
    procs.start(settings, "workers.notifier")
    finish_job(redis_client, settings, "slow", slow.url)
    wait_until(lambda: slow.posts, 30, f"the slow receiver's request\n{procs.logs()}")
    finish_job(redis_client, settings, "fast", fast.url)
    wait_until(lambda: fast.posts, 10, "the fast delivery while the slow one is in flight")
    assert not slow.hold.is_set()  # the slow one has still not answered
    slow.hold.set()


class Trickle:
    """A receiver on 127.0.0.1 that answers one header byte every 0.2 s, forever."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"
        self.stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        conn, _ = self.sock.accept()
        conn.recv(65536)
        try:
            for byte in b"HTTP/1.1 200 OK\r\nx-slow: " + b"a" * 1000:
                if self.stop.wait(0.2):
                    break
                conn.sendall(bytes([byte]))
        except OSError:
            pass
        conn.close()

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


def test_an_attempt_ends_at_its_deadline_even_when_the_receiver_trickles() -> None:
    trickle = Trickle()
    sender = Sender(1.5, AddressPolicy(allow_private=True))
    try:
        started = time.monotonic()
        headers = signing.headers(b"k" * 32, "msg_x", int(time.time()), b"{}")
        outcome = sender.send(trickle.url, headers, b"{}")
        took = time.monotonic() - started
    finally:
        sender.close()
        trickle.close()
    assert not outcome.ok and outcome.error == "timed out after 1.5 s"
    assert 1.4 <= took < 3.0  # every read came within its timeout, yet the attempt was cut


def test_redirects_are_not_followed(hooks: list[Hook]) -> None:
    target = start_hook(hooks)
    redirect = start_hook(hooks, (307, {"Location": target.url}))
    sender = Sender(5, AddressPolicy(allow_private=True))
    try:
        outcome = sender.send(redirect.url, {"content-type": "application/json"}, b"{}")
    finally:
        sender.close()
    assert not outcome.ok and outcome.status_code == 307
    assert "redirects are not followed" in (outcome.error or "")
    assert len(redirect.posts) == 1 and target.posts == []
