"""More than one host: Redis and the API on test host A, every worker on test host B.

The hosts are network namespaces of the test's own (tests/support/netns.py: a veth pair, TEST-NET-1
addresses, no route anywhere else; needs root, else skipped with the reason). The test itself
talks to the API and to Redis from inside host A. What it shows:
- jobs submitted on A are done by the workers on B: their heartbeats' processes live in B's
  namespace, and Redis sees each worker's connections (named with its worker id) come from B's
  address, none from anywhere else;
- the notifier on B delivers a signed webhook to a receiver on A;
- B's link down: /readyz on A says no worker serves the streams, a job is accepted all the same,
  the workers' connections break; the link back: the same worker processes reconnect, /readyz
  recovers, and that job is done, its webhook delivered.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from shared import keys
from tests.e2e.receiver import Receiver
from tests.support import netns
from tests.support.twohosts import PIPELINE, WEBHOOK_SECRET, WORKER_KINDS, Split, split_stack
from tests.support.waiting import wait_until
from workers.webhooks import signing

TERMINAL = {"succeeded", "failed", "canceled"}


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Split]:
    reason = netns.unavailable()
    if reason is not None:
        pytest.skip(f"no test hosts: {reason}")
    tmp = tmp_path_factory.mktemp("two-hosts")
    with netns.two_hosts() as (a, b), split_stack(a, b, tmp) as split:
        yield split


@pytest.fixture(scope="module")
def receiver(hosts: Split) -> Iterator[Receiver]:
    with hosts.a.entered():  # its listening socket is on host A
        server = Receiver(host=hosts.a.addr)
    with server:
        yield server


@pytest.fixture
def on_a(hosts: Split) -> Iterator[Split]:
    """The test's own thread on host A while it runs: every connection it makes starts there."""
    with hosts.a.entered():
        yield hosts


@pytest.fixture
def http(on_a: Split) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=on_a.api_url, timeout=30, trust_env=False) as client:
        yield client


@pytest.fixture
def rdb(on_a: Split) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(on_a.redis_url, decode_responses=True)
    yield client
    client.close()


def submit(http: httpx.Client, text: str, **extra: Any) -> str:
    response = http.post(f"/v1/pipelines/{PIPELINE}/jobs", json={"inputs": [{"text": text}], **extra})
    assert response.status_code == 202, response.text
    return response.json()["id"]


def finished(http: httpx.Client, job_id: str, wait_s: float = 30) -> dict[str, Any]:
    job = wait_until(
        lambda: (
            (j := http.get(f"/v1/jobs/{job_id}", params={"wait_s": 5}).json())["status"] in TERMINAL and j
        ),
        wait_s,
        f"job {job_id} to end",
    )
    return job


def netns_inode(path: str) -> int:
    return os.stat(path).st_ino


def test_jobs_on_host_a_are_done_by_workers_on_host_b(
    hosts: Split, http: httpx.Client, rdb: redis.Redis
) -> None:
    ids = [submit(http, "x" * n) for n in range(1, 9)]
    for n, job_id in enumerate(ids, start=1):
        job = finished(http, job_id)
        assert job["status"] == "succeeded", job
        assert job["outputs"][0]["result"]["sum"] == 2.0 * n, job

    live = rdb.zrange(keys.WORKERS, 0, -1)
    workers = {w: rdb.hgetall(keys.worker(w)) for w in live}
    assert {h["kind"] for h in workers.values()} == set(WORKER_KINDS), workers
    # Their processes live in host B's network namespace (the host name is the same on both).
    b_ns = netns_inode(f"/run/netns/{hosts.b.ns}")
    for worker_id, fields in workers.items():
        assert netns_inode(f"/proc/{fields['pid']}/ns/net") == b_ns, (worker_id, fields)
    # Redis sees each worker's connections come from host B's address.
    clients = rdb.client_list()
    for worker_id in workers:
        addrs = {c["addr"].rsplit(":", 1)[0] for c in clients if c["name"] == worker_id}
        assert addrs == {hosts.b.addr}, (worker_id, addrs, clients)
    others = {c["addr"].rsplit(":", 1)[0] for c in clients if c["name"] not in workers}
    assert others <= {"127.0.0.1", hosts.b.addr}, clients  # the API (and this test) on A's loopback; rq on B


def test_webhook_from_host_b_reaches_host_a(hosts: Split, http: httpx.Client, receiver: Receiver) -> None:
    job_id = submit(http, "abc", webhook=receiver.url)
    assert finished(http, job_id)["status"] == "succeeded"
    hook = wait_until(
        lambda: next((h for h in receiver.completed() if h.job_id == job_id), None),
        30,
        "the completion webhook",
    )
    assert hook.peer == hosts.b.addr, hook  # sent by the notifier on host B
    key = signing.secret_key(WEBHOOK_SECRET)
    msg_id, timestamp = hook.headers["webhook-id"], int(hook.headers["webhook-timestamp"])
    expected = signing.sign(key, msg_id, timestamp, hook.body)
    assert expected in hook.headers["webhook-signature"].split(), hook.headers


def live_pids(rdb: redis.Redis) -> dict[str, str]:
    """kind -> pid of each worker with a heartbeat hash (the hash expires with its TTL)."""
    hashes = [rdb.hgetall(keys.worker(w)) for w in rdb.zrange(keys.WORKERS, 0, -1)]
    return {h["kind"]: h["pid"] for h in hashes if h}


def test_link_down_then_back(hosts: Split, http: httpx.Client, rdb: redis.Redis, receiver: Receiver) -> None:
    def readyz() -> tuple[int, dict[str, Any]]:
        response = http.get("/readyz")
        return response.status_code, response.json()

    before = live_pids(rdb)
    assert set(before) == set(WORKER_KINDS), before
    hosts.b.link(up=False)
    try:
        status, body = wait_until(
            lambda: (r := readyz())[1].get("workers") == 0 and r, 20, "/readyz to see no workers"
        )
        assert status == 503, body
        assert "no live worker for stream" in body["reason"] and "no live notifier" in body["reason"], body
        job_id = submit(http, "during the outage", webhook=receiver.url)  # Redis is on A: accepted
        assert http.get(f"/v1/jobs/{job_id}").json()["status"] not in TERMINAL  # no worker can reach it
        # Down past the workers' socket timeouts: their connections break, they must reconnect (a
        # blocking read Redis answered meanwhile is lost on the way: its entry is reclaimed later).
        wait_until(
            lambda: all("Network is unreachable" in hosts.log(k) for k in ("preprocess", "model")),
            30,
            "the workers on B to find Redis unreachable",
        )
    finally:
        hosts.b.link(up=True)
    wait_until(lambda: readyz()[0] == 200, 30, "/readyz to see the workers again")
    assert live_pids(rdb) == before  # the same processes came back: none died of the outage
    job = finished(http, job_id)
    assert job["status"] == "succeeded", job
    assert job["outputs"][0]["result"]["sum"] == 2.0 * len("during the outage"), job
    wait_until(lambda: job_id in receiver.answered_jobs(), 30, "the outage job's webhook")
