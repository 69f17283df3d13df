"""A Redis Sentinel setup of real redis-server processes, and a failover run of the whole stack on
it: used by tests/e2e/test_redis_failover.py and bench/scripts/failover.py.

Topology: a primary, a replica and three sentinels (`redis-server conf --sentinel`), each on a
free loopback port (never 6379), with short down-after / failover timeouts. The run: `dlpipe up`
on the sentinels, `jobs` jobs submitted by client threads (each with its own Idempotency-Key,
retried on 503 and on errors), the primary SIGKILLed once `kill_after` are accepted, started
again as a replica of the new primary once the sentinels promoted it; then every accepted
job is looked for on the new primary: lost (absent or never ending), duplicated (two jobs for
one key), and how long the stack took to accept a job again.
"""

from __future__ import annotations

import json
import queue
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis
import yaml

from shared import keys
from shared.embedded_redis import find_redis_server, free_port, wait_for_redis
from tests.support.waiting import wait_until

MASTER = "dlpipe"
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000
PIPELINE = "sums"
TERMINAL = {"succeeded", "failed", "canceled"}


@dataclass
class Node:
    port: int
    conf: Path
    sentinel: bool = False
    proc: subprocess.Popen | None = None

    def start(self, *extra: str) -> None:
        argv = [find_redis_server(), str(self.conf), *extra] + (["--sentinel"] if self.sentinel else [])
        log = (self.conf.parent / "server.log").open("ab")
        self.proc = subprocess.Popen(argv, cwd=self.conf.parent, stdout=log, stderr=subprocess.STDOUT)
        wait_for_redis(f"redis://127.0.0.1:{self.port}/0", timeout_s=10.0, proc=self.proc)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


@dataclass
class Topology:
    data: Node
    replica: Node
    sentinels: list[Node]
    lag_ms: float = 0

    def lag_replication(self) -> None:
        """Put the replica behind a LagProxy (if lag_ms). Done just before the kill: the sentinels
        "fix" a replica whose primary address is not the one they monitor, some 8 s later."""
        if not self.lag_ms:
            return
        proxy = LagProxy(self.data.port, self.lag_ms)
        replica = redis.Redis(port=self.replica.port)
        replica.replicaof("127.0.0.1", proxy.port)
        wait_until(lambda: replica.info("replication")["master_link_status"] == "up", 20, "the lagged link")

    @property
    def sentinels_env(self) -> str:
        return ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)

    def primary_port(self) -> int | None:
        """The primary's port as the sentinels name it now (None: none answers)."""
        for node in self.sentinels:
            try:
                with redis.Redis(port=node.port, socket_timeout=0.5) as c:
                    addr = c.execute_command("SENTINEL", "get-master-addr-by-name", MASTER)
                    if addr:
                        return int(addr[1])
            except redis.RedisError:
                continue
        return None

    def node(self, port: int) -> Node:
        return self.data if self.data.port == port else self.replica

    def stop(self) -> None:
        for node in [*self.sentinels, self.data, self.replica]:
            node.kill()


class LagProxy:
    """A loopback TCP proxy from the replica to the primary that holds what the primary sends for
    `lag_ms` (a replication link with latency). When the primary dies, what it holds is dropped,
    as a host that goes down loses what was on its way: the writes a failover can lose."""

    def __init__(self, upstream_port: int, lag_ms: float) -> None:
        self.upstream_port, self.lag_s = upstream_port, lag_ms / 1000
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                down, _ = self.listener.accept()
            except OSError:
                return
            try:
                up = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=1)
            except OSError:
                down.close()
                continue
            up.settimeout(None)
            held: queue.Queue[tuple[float, bytes] | None] = queue.Queue()
            threading.Thread(target=self._read, args=(up, down, held), daemon=True).start()
            threading.Thread(target=self._deliver, args=(down, held), daemon=True).start()
            threading.Thread(target=self._pipe, args=(down, up), daemon=True).start()

    def _read(
        self, up: socket.socket, down: socket.socket, held: queue.Queue[tuple[float, bytes] | None]
    ) -> None:
        while True:
            try:
                chunk = up.recv(65536)
            except OSError:
                chunk = b""
            if not chunk:  # the primary is gone: what is held is lost with it
                while not held.empty():
                    held.get_nowait()
                held.put(None)
                return
            held.put((time.monotonic() + self.lag_s, chunk))

    def _deliver(self, down: socket.socket, held: queue.Queue[tuple[float, bytes] | None]) -> None:
        gone = threading.Event()  # never set: a timed pause until each chunk is due
        while (item := held.get()) is not None:
            due, chunk = item
            gone.wait(max(0.0, due - time.monotonic()))
            try:
                down.sendall(chunk)
            except OSError:
                break
        down.close()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        while True:
            try:
                chunk = src.recv(65536)
                if not chunk:
                    break
                dst.sendall(chunk)
            except OSError:
                break
        dst.close()


def _write(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def _data_conf(folder: Path, port: int, replica_of: int | None) -> Path:
    lines = [
        f"port {port}",
        "bind 127.0.0.1",
        "protected-mode no",
        f"dir {folder}",
        'save ""',
        "appendonly yes",
        "appendfsync everysec",
        "maxmemory-policy noeviction",
        "repl-diskless-sync yes",
        "repl-diskless-sync-delay 0",
        'logfile ""',
    ]
    if replica_of is not None:
        lines.append(f"replicaof 127.0.0.1 {replica_of}")
    return _write(folder / "redis.conf", lines)


def start_topology(tmp: Path, lag_ms: float = 0) -> Topology:
    """Primary, replica, three sentinels; returns once the sentinels see the replica. `lag_ms`: the
    replica replicates through a LagProxy."""
    p_port, r_port = free_port(), free_port()
    data = Node(p_port, _data_conf(tmp / "primary", p_port, None))
    replica = Node(r_port, _data_conf(tmp / "replica", r_port, p_port))
    sentinels = []
    for n in range(3):
        port = free_port()
        conf = _write(
            tmp / f"sentinel{n}" / "sentinel.conf",
            [
                f"port {port}",
                "bind 127.0.0.1",
                "protected-mode no",
                f"dir {tmp / f'sentinel{n}'}",
                f"sentinel monitor {MASTER} 127.0.0.1 {p_port} 2",
                f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}",
                f"sentinel failover-timeout {MASTER} {FAILOVER_TIMEOUT_MS}",
                f"sentinel parallel-syncs {MASTER} 1",
                'logfile ""',
            ],
        )
        sentinels.append(Node(port, conf, sentinel=True))
    topo = Topology(data, replica, sentinels, lag_ms)
    try:
        for node in [data, replica, *sentinels]:
            node.start()
        primary = redis.Redis(port=p_port)
        wait_until(lambda: primary.info("replication")["connected_slaves"] >= 1, 20, "the replica to attach")

        def sentinels_see_replica() -> bool:
            for s in sentinels:
                with redis.Redis(port=s.port, decode_responses=True) as c:
                    seen = c.sentinel_master(MASTER)
                    if int(seen["num-other-sentinels"]) < 2 or not c.sentinel_slaves(MASTER):
                        return False
            return True

        wait_until(sentinels_see_replica, 30, "the sentinels to see the replica and each other", 0.1)
    except BaseException:
        topo.stop()
        raise
    return topo


def pipelines_file(path: Path) -> Path:
    """`sums` (text in, tests/stagefns.py's SumModel, no weights): light enough for 300 jobs."""
    doc = {
        "models": {
            "summer": {
                "class": "tests.stagefns:SumModel",
                "batching": {"max_batch_size": 16, "max_batch_delay_ms": 2},
            }
        },
        "pipelines": {
            PIPELINE: {
                "input": "text",
                "stages": [
                    {"name": "prep", "kind": "preprocess", "fn": "tests.failover:text_vector"},
                    {"name": "infer", "kind": "model", "model": "summer"},
                    {"name": "post", "kind": "postprocess", "fn": "tests.stagefns:to_result"},
                ],
            }
        },
    }
    path.write_text(yaml.safe_dump(doc))
    return path


def text_vector(value: dict[str, Any]) -> Any:
    """A text input -> a float32 vector of its length (the preprocess stage of `sums`)."""
    import numpy as np  # noqa: PLC0415

    return np.full((2,), float(len(value["text"])), dtype=np.float32)


def stack_env(topo: Topology, tmp: Path, min_replicas: int) -> dict[str, str]:
    return {
        "DLPIPE_REDIS_SENTINELS": topo.sentinels_env,
        "DLPIPE_REDIS_MASTER_NAME": MASTER,
        "DLPIPE_REDIS_MIN_REPLICAS": str(min_replicas),
        "DLPIPE_REDIS_WAIT_TIMEOUT_MS": "500",
        "DLPIPE_PIPELINES_FILE": str(pipelines_file(tmp / "pipelines.yaml")),
        "DLPIPE_LEASE_MS": "1500",
        "DLPIPE_TORCH_THREADS": "1",
        "DLPIPE_MAX_BACKLOG": "100000",
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
    }


@dataclass
class Load:
    accepted: dict[int, str] = field(default_factory=dict)  # job number -> the job id its 202 gave
    accepted_at: dict[int, float] = field(default_factory=dict)
    refused: Counter[str] = field(default_factory=Counter)
    attempts: list[tuple[float, float, int]] = field(default_factory=list)  # sent, answered, status
    lock: threading.Lock = field(default_factory=threading.Lock)


def submit(base_url: str, n: int, threads: int, load: Load, give_up_at: float) -> None:
    """n one-text jobs, each with its own Idempotency-Key, retried until 202 (or `give_up_at`)."""
    pause = threading.Event()  # never set

    def one(k: int, http: httpx.Client) -> None:
        body = {"inputs": [{"text": "x" * (k % 7 + 1)}], "metadata": {"k": k}}
        headers = {"Idempotency-Key": f"failover-{k:05d}-{uuid.UUID(int=k).hex}"}
        while time.monotonic() < give_up_at:
            sent = time.monotonic()
            try:
                response = http.post(f"/v1/pipelines/{PIPELINE}/jobs", json=body, headers=headers)
                status, what = response.status_code, str(response.status_code)
            except httpx.HTTPError as exc:
                status, what = 0, type(exc).__name__
            with load.lock:
                load.attempts.append((sent, time.monotonic(), status))
                if status == 202:
                    load.accepted[k] = response.json()["id"]
                    load.accepted_at[k] = time.monotonic()
                    return
                load.refused[what] += 1
            pause.wait(0.05)  # a client's pause before retrying a refused submit

    def worker(ks: range) -> None:
        with httpx.Client(base_url=base_url, timeout=30) as http:
            for k in ks:
                one(k, http)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(worker, [range(t, n, threads) for t in range(threads)]))


@dataclass
class Result:
    accepted: int
    lost: list[int]
    duplicated: list[int]
    unfinished: list[int]
    promoted_s: float  # kill -> the sentinels name the replica
    served_s: float  # kill -> the first 202 to a request sent after the kill
    refused: dict[str, int]
    readyz_reasons: list[str]

    def line(self, label: str) -> str:
        return (
            f"{label}: accepted={self.accepted} lost={len(self.lost)} duplicated={len(self.duplicated)} "
            f"unfinished={len(self.unfinished)} promoted_s={self.promoted_s:.2f} "
            f"served_again_s={self.served_s:.2f} refused={self.refused}"
        )


def watch_readyz(base_url: str, stop: threading.Event, reasons: list[str]) -> None:
    with httpx.Client(base_url=base_url, timeout=5) as http:
        while not stop.wait(0.1):
            try:
                r = http.get("/readyz")
                if r.status_code != 200:
                    reason = r.json().get("reason", "")
                    if not reasons or reasons[-1] != reason:
                        reasons.append(reason)
            except (httpx.HTTPError, ValueError):
                continue


def jobs_by_number(client: redis.Redis) -> dict[int, list[tuple[str, str]]]:
    """Every job on the primary by its metadata number: [(job id, status), ...]."""
    out: dict[int, list[tuple[str, str]]] = {}
    prefix = keys.job("").encode()
    for key in client.scan_iter(match=keys.job("*"), count=1000):
        if b":" in key.removeprefix(prefix):  # a key beside a job record (its events, inputs, files)
            continue
        job = client.hmget(key, ["id", "status", "metadata"])
        if job[2]:
            k = json.loads(job[2])["k"]
            out.setdefault(k, []).append((job[0].decode(), job[1].decode()))
    return out


def run_failover(
    base_url: str, topo: Topology, jobs: int, kill_after: int, threads: int = 4, drain_s: float = 60
) -> Result:
    """The load, the kill, the old primary's return, and the count (see the module docstring)."""
    load = Load()
    stop_watch = threading.Event()
    reasons: list[str] = []
    watcher = threading.Thread(target=watch_readyz, args=(base_url, stop_watch, reasons), daemon=True)
    watcher.start()
    submitter = threading.Thread(target=submit, args=(base_url, jobs, threads, load, time.monotonic() + 120))
    submitter.start()
    try:
        wait_until(lambda: len(load.accepted) >= kill_after, 60, f"{kill_after} jobs accepted")
        old = topo.primary_port()
        assert old is not None
        topo.lag_replication()
        topo.node(old).kill()
        killed = time.monotonic()
        wait_until(
            lambda: topo.primary_port() not in (None, old), 30, "the sentinels to promote the replica", 0.05
        )
        promoted = time.monotonic() - killed
        # Back as a replica of the new primary, as an operator (or a Helm chart's start script, asking
        # the sentinels) restarts it: started as a primary, it would wait for the sentinels' next
        # INFO round (10 s) to be turned into one.
        topo.node(old).start("--replicaof", "127.0.0.1", str(topo.primary_port()))
        submitter.join(150)
        assert not submitter.is_alive(), "the submitting clients never finished"
        new = redis.Redis(port=topo.primary_port() or 0)
        ids = set(load.accepted.values())

        def all_final() -> bool:
            states = [new.hget(keys.job(j), "status") for j in ids]
            return all(s is None or s.decode() in TERMINAL for s in states)

        try:
            wait_until(all_final, drain_s, "every accepted job to end", 0.2)
        except AssertionError:
            pass  # counted below as unfinished
        found = jobs_by_number(new)
    finally:
        stop_watch.set()
    lost = [k for k, j in load.accepted.items() if j not in {jid for jid, _ in found.get(k, [])}]
    unfinished = [
        k
        for k, j in load.accepted.items()
        if any(jid == j and s not in TERMINAL for jid, s in found.get(k, []))
    ]
    duplicated = [k for k, entries in found.items() if len(entries) > 1]
    after = [answered for sent, answered, status in load.attempts if status == 202 and sent > killed]
    return Result(
        len(load.accepted),
        sorted(lost),
        sorted(duplicated),
        sorted(unfinished),
        promoted,
        (min(after) - killed) if after else float("inf"),
        dict(load.refused),
        reasons,
    )
