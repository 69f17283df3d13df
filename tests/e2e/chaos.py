"""What the tests that kill things share: small generated JPEGs, concurrent submission, the
stack's processes by command line, and the checker (their webhook receiver: receiver.py).

The checker follows Jepsen's queue checker: after a full drain, every job that got a 202 is
counted as delivered (final, every output present once, one completion event), lost (not
final, or an output missing) or duplicated (an output or a completion recorded twice). Its
webhooks are judged by what the receiver saw: one distinct completion `webhook-id` a job, at
least one POST of it answered 2xx, and the duplicate POSTs (the same `webhook-id` again), counted.
"""

from __future__ import annotations

import base64
import io
import os
import re
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis
import yaml
from PIL import Image

from shared import keys
from shared.settings import DEFAULT_PIPELINES_FILE
from tests.e2e.receiver import Hook

FINAL = ("succeeded", "failed", "canceled")
PIPELINE = "image-classify"


# -- inputs ------------------------------------------------------------------------------


def tiny_jpegs(n: int = 8, size: int = 48) -> list[bytes]:
    """n small, different JPEGs (colour gradients): cheap to send and to decode."""
    images = []
    for k in range(n):
        img = Image.new("RGB", (size, size))
        img.putdata(
            [
                ((x * 5 + k * 29) % 256, (y * 5 + k * 53) % 256, (x + y + k * 17) % 256)
                for y in range(size)
                for x in range(size)
            ]
        )
        out = io.BytesIO()
        img.save(out, format="JPEG", quality=85)
        images.append(out.getvalue())
    return images


def image_classify_only(path: Path) -> Path:
    """A pipelines file holding only image-classify and its model, as shared/pipelines.yaml
    declares them: the model worker loads one model, so it restarts fast."""
    doc = yaml.safe_load(DEFAULT_PIPELINES_FILE.read_text())
    pipeline = doc["pipelines"][PIPELINE]
    used = {s["model"] for s in pipeline["stages"] if s.get("model")}
    small = {"models": {m: doc["models"][m] for m in used}, "pipelines": {PIPELINE: pipeline}}
    path.write_text(yaml.safe_dump(small))
    return path


# -- submitting ----------------------------------------------------------------------------


@dataclass
class Submitted:
    accepted: list[str] = field(default_factory=list)  # job ids answered 202
    refused: Counter[str] = field(default_factory=Counter)  # other answers (status or error), counted
    # Job numbers (metadata.k) whose submission met an error or a non-202 at least once: the
    # client cannot know whether such an attempt created a job (a reply lost with Redis, say),
    # so its retry may make a second one. Idempotency-Key is the cure; these tests retry without.
    uncertain: set[int] = field(default_factory=set)
    replayed: set[int] = field(default_factory=set)  # job numbers answered `Idempotent-Replayed: true`
    lock: threading.Lock = field(default_factory=threading.Lock)


def submit_jobs(
    base_url: str,
    n: int,
    images: list[bytes],
    webhook: str | None,
    threads: int = 4,
    into: Submitted | None = None,
    retry: Callable[[int], bool] = lambda n: False,
    headers: Callable[[int], dict[str, str]] | None = None,
) -> Submitted:
    """Submit n one-image jobs with `threads` clients; record what was accepted. A refused
    job (an error or non-202) is retried while `retry(tries so far)` says so. `headers(k)`:
    more headers for job k (every try), an `Idempotency-Key` say."""
    done = into or Submitted()
    encoded = [base64.b64encode(i).decode() for i in images]

    def one(k: int, client: httpx.Client) -> None:
        body: dict[str, Any] = {"inputs": [{"image_base64": encoded[k % len(encoded)]}], "metadata": {"k": k}}
        if webhook:
            body["webhook"] = webhook
        tries = 0
        while True:
            tries += 1
            try:
                response = client.post(
                    f"/v1/pipelines/{PIPELINE}/jobs", json=body, headers=headers(k) if headers else None
                )
                what = str(response.status_code)
                if response.status_code == 202:
                    with done.lock:
                        done.accepted.append(response.json()["id"])
                        if response.headers.get("idempotent-replayed") == "true":
                            done.replayed.add(k)
                    return
            except httpx.HTTPError as exc:
                what = type(exc).__name__
            with done.lock:
                done.refused[what] += 1
                done.uncertain.add(k)
            if not retry(tries):
                return

    def worker(ks: Iterable[int]) -> None:
        with httpx.Client(base_url=base_url, timeout=30) as client:
            for k in ks:
                one(k, client)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(worker, [range(t, n, threads) for t in range(threads)]))
    return done


# -- the stack's processes -----------------------------------------------------------------


def _proc(pid: int) -> tuple[int, list[str]] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = [a.decode() for a in f.read().split(b"\0") if a]
    except (OSError, IndexError, ValueError):
        return None
    return ppid, argv


def processes(parent: int, *argv_tail: str) -> set[int]:
    """Pids of `parent`'s children whose command line holds `argv_tail` (what `ps` shows)."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        info = _proc(int(entry))
        if info is None or info[0] != parent:
            continue
        words = info[1][1:]
        if any(tuple(words[i : i + len(argv_tail)]) == argv_tail for i in range(len(words))):
            found.add(int(entry))
    return found


def redis_url_of(log: str) -> str:
    found = re.search(r"Redis: (redis://127\.0\.0\.1:(\d+)/0)", log)
    assert found, "no Redis URL in the stack's log"
    assert int(found.group(2)) != 6379
    return found.group(1)


def live_workers(client: redis.Redis, kind: str, ttl_ms: int) -> dict[str, int]:
    """worker id -> pid of the workers of `kind` with a live heartbeat."""
    now = int(time.time() * 1000)
    ids = [i.decode() for i in client.zrangebyscore(keys.WORKERS, now - ttl_ms, "+inf")]
    pipe = client.pipeline(transaction=False)
    for worker_id in ids:
        pipe.hmget(keys.worker(worker_id), ["kind", "pid"])
    live = {}
    for worker_id, (k, pid) in zip(ids, pipe.execute(), strict=True):
        if k is not None and k.decode() == kind and pid is not None:
            live[worker_id] = int(pid)
    return live


# -- the checker ---------------------------------------------------------------------------


def job_states(client: redis.Redis, job_ids: list[str]) -> list[tuple[str | None, int, int, int]]:
    """(status, done, total, outputs recorded) of each job, from Redis, in one round trip."""
    pipe = client.pipeline(transaction=False)
    for job_id in job_ids:
        pipe.hmget(keys.job(job_id), ["status", "done", "total"])
        pipe.hlen(keys.job_outputs(job_id))
    replies = pipe.execute()
    states = []
    for (status, done, total), n_outputs in zip(replies[::2], replies[1::2], strict=True):
        states.append((status.decode() if status else None, int(done or 0), int(total or 0), int(n_outputs)))
    return states


def finished(client: redis.Redis, job_ids: list[str]) -> int:
    return sum(1 for status, *_ in job_states(client, job_ids) if status in FINAL)


@dataclass
class Verdict:
    """Every accepted job, counted once: delivered, lost or duplicated; and its webhooks."""

    jobs: int = 0
    delivered: int = 0
    lost: list[str] = field(default_factory=list)  # not final, or an output missing
    duplicated: list[str] = field(default_factory=list)  # an output or completion recorded twice
    failed_outputs: dict[str, str] = field(default_factory=dict)  # job -> error (final, but failed)
    without_webhook: list[str] = field(default_factory=list)  # no completion webhook answered 2xx
    distinct_events_over_one: list[str] = field(default_factory=list)  # >1 completion event (webhook-id)
    redelivered_posts: int = 0  # POSTs beyond the first of one webhook-id (at-least-once retries)
    duplicates: dict[str, int] = field(default_factory=dict)  # webhook-id -> its POSTs beyond the first
    unknown_hooks: int = 0  # POSTs for jobs nobody submitted
    unknown: list[str] = field(default_factory=list)  # what they were: job id, webhook-id, status, k
    ambiguous_hooks: int = 0  # POSTs for jobs made by an attempt whose answer the client never got

    def summary(self) -> str:
        return (
            f"jobs={self.jobs} delivered={self.delivered} lost={len(self.lost)} "
            f"duplicated={len(self.duplicated)} failed_outputs={len(self.failed_outputs)} "
            f"webhooks: missing={len(self.without_webhook)} "
            f"jobs_with_more_than_one_completion_event={len(self.distinct_events_over_one)} "
            f"duplicate_posts(same webhook-id)={self.redelivered_posts} "
            f"unknown={self.unknown_hooks} "
            f"ambiguous_retries={self.ambiguous_hooks}"
            + (f" unknown hooks: {self.unknown}" if self.unknown else "")
            + (
                f" failed outputs (job: error): {dict(list(self.failed_outputs.items())[:5])}"
                if self.failed_outputs
                else ""
            )
        )


def check(
    base_url: str,
    client: redis.Redis,
    job_ids: list[str],
    hooks: list[Hook],
    uncertain: set[int] | None = None,
) -> Verdict:
    """Judge every accepted job by what a user sees (GET /v1/jobs/{id}) and by what Redis holds.

    A hook for a job nobody got a 202 for is `ambiguous` when its job number is in `uncertain`
    (an attempt whose answer was lost, then retried), else `unknown`."""
    verdict = Verdict(jobs=len(job_ids))
    states = dict(zip(job_ids, job_states(client, job_ids), strict=True))
    with httpx.Client(base_url=base_url, timeout=30) as http:
        for job_id in job_ids:
            status, done, total, n_outputs = states[job_id]
            response = http.get(f"/v1/jobs/{job_id}")
            view = response.json() if response.status_code == 200 else None
            if view is None or view["status"] not in FINAL or status not in FINAL:
                verdict.lost.append(job_id)
                continue
            outputs = view["outputs"]
            if (
                n_outputs < total
                or len(outputs) != total
                or any(o["status"] == "pending" for o in outputs)
                or view["progress"]["done"] < view["progress"]["total"]
            ):
                verdict.lost.append(job_id)
                continue
            if done != total or n_outputs != total or view["progress"]["done"] != total:
                verdict.duplicated.append(job_id)
                continue
            verdict.delivered += 1
            failed = [o for o in outputs if o["status"] != "succeeded" or not o.get("result")]
            if failed:
                verdict.failed_outputs[job_id] = str(failed[0].get("error"))
    events: dict[str, set[str]] = defaultdict(set)
    answered: set[str] = set()
    posts: Counter[tuple[str, str]] = Counter()
    wanted = set(job_ids)
    for hook in hooks:
        if hook.type != "job.completed":
            continue
        if hook.job_id not in wanted:
            if hook.k is not None and hook.k in (uncertain or set()):
                verdict.ambiguous_hooks += 1
            else:
                verdict.unknown_hooks += 1
                what = f"job {hook.job_id!r} webhook-id {hook.webhook_id!r} {hook.status} k={hook.k}"
                verdict.unknown.append(what)
            continue
        events[hook.job_id].add(hook.webhook_id)
        posts[(hook.job_id, hook.webhook_id)] += 1
        if hook.answered:
            answered.add(hook.job_id)
    verdict.without_webhook = [j for j in job_ids if j not in answered]
    verdict.distinct_events_over_one = [j for j, ids in events.items() if len(ids) > 1]
    verdict.duplicates = {webhook_id: n - 1 for (_, webhook_id), n in posts.items() if n > 1}
    verdict.redelivered_posts = sum(verdict.duplicates.values())
    return verdict


def stream_keys(client: redis.Redis) -> list[str]:
    return sorted(k.decode() for k in client.scan_iter(match=f"{keys.PREFIX}:stream:*", count=1000))


def unfinished_entries(client: redis.Redis) -> dict[str, int]:
    """Per stream and group: entries pending or not yet read (should all be 0 after a drain)."""
    left: dict[str, int] = {}
    for stream in [*stream_keys(client), keys.EVENTS]:
        if not client.exists(stream):
            continue
        last = client.xrevrange(stream, count=1)
        last_id = last[0][0].decode() if last else "0-0"
        for group in client.xinfo_groups(stream):
            name = group["name"].decode() if isinstance(group["name"], bytes) else group["name"]
            delivered = group["last-delivered-id"]
            delivered = delivered.decode() if isinstance(delivered, bytes) else delivered
            unread = len(client.xrange(stream, f"({delivered}", last_id)) if delivered != last_id else 0
            left[f"{stream}/{name}"] = int(group["pending"]) + unread
    return left


RETRY_PENDING = ("queued", "started", "scheduled", "deferred")  # rq will (re)run the delivery


def delivery_state(client: redis.Redis, job_id: str) -> str:
    """Where a job's completion webhook is: its delivery's state, then what rq holds of it
    (`rq started (abandoned)`: in the started registry of a worker that is gone; a notifier's
    recovery queues it again once its notifier's heartbeat lapses, rq's maintenance once the
    execution's does)."""
    delivery = client.hget(keys.job_webhook(job_id), "completed")
    if delivery is None:
        return "no delivery"
    name = delivery.decode()
    state = (client.hget(keys.webhook(name), "state") or b"?").decode()
    round_ = (client.hget(keys.webhook(name), "round") or b"1").decode()
    rq_id = f"{name}_r{round_}"
    rq_status = (client.hget(f"rq:job:{rq_id}", "status") or b"none").decode()
    wip = client.zrange(f"rq:wip:{keys.WEBHOOK_QUEUE}", 0, -1)  # rq's StartedJobRegistry
    started = any(m.decode().startswith(rq_id + ":") for m in wip)
    return f"{state}/rq {rq_status}" + (" (abandoned)" if rq_status == "started" and started else "")


def retry_pending(state: str) -> bool:
    """Is a delivery in this state (delivery_state) bound to be attempted again by rq?"""
    return state.split("/rq ", 1)[-1].split(" ")[0] in RETRY_PENDING
