"""Webhook deliveries per second that one notifier process sustains to a local receiver.

    .venv/bin/python bench/scripts/webhook_throughput.py --deliveries 2000 --concurrency 16

Starts its own redis-server and `dlpipe worker notifier` (rq workers as threads, signed
deliveries, the SSRF guard lifted for 127.0.0.1), writes `deliveries` finished jobs whose
webhook points at a receiver in this process (asyncio, answers 204 at once, checks a sample
of signatures with `standardwebhooks`), then puts all their job.completed events on the
events stream at once and times them from there to the last delivery received. With
`--stuck N`, N more jobs point at a receiver that accepts and never answers, queued first:
they hold N of the notifier's threads until their attempt's deadline while the others go on.
Prints one JSON document.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import redis
from standardwebhooks.webhooks import Webhook

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from shared import keys  # noqa: E402
from shared.embedded_redis import start_redis  # noqa: E402
from shared.messages import now_ms  # noqa: E402
from shared.webhook_secret import new_secret  # noqa: E402


class Receiver:
    """A minimal HTTP/1.1 receiver on 127.0.0.1 (asyncio, in a thread). `answer=False`: accept,
    read the request and never answer (a stuck receiver)."""

    def __init__(self, secret: str, answer: bool = True, check_every: int = 100) -> None:
        self.secret, self.answer, self.check_every = secret, answer, check_every
        self.received = 0
        self.times: list[float] = []
        self.verified = 0
        self.ids: set[str] = set()
        self.ready = threading.Event()
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self._run, daemon=True).start()
        self.ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        start = asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=1024)
        server = self.loop.run_until_complete(start)
        self.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hook"
        self.ready.set()
        self.loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            headers = {}
            for line in head.decode("latin-1").split("\r\n")[1:]:
                if ":" in line:
                    name, value = line.split(":", 1)
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            if not self.answer:
                await asyncio.sleep(3600)
            self.received += 1
            self.times.append(time.monotonic())
            self.ids.add(headers["webhook-id"])
            if self.received % self.check_every == 1:
                Webhook(self.secret).verify(body, headers)
                self.verified += 1
            writer.write(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def write_jobs(client: redis.Redis, prefix: str, count: int, url: str) -> list[str]:
    ids = [f"{prefix}{n}" for n in range(count)]
    pipe = client.pipeline(transaction=False)
    output = json.dumps({"index": 0, "status": "succeeded", "result": {"labels": ["tabby"] * 5}})
    for job_id in ids:
        pipe.hset(
            keys.job(job_id),
            mapping={
                "id": job_id,
                "pipeline": "bench",
                "status": "succeeded",
                "created_at": now_ms(),
                "started_at": now_ms(),
                "completed_at": now_ms(),
                "total": 1,
                "done": 1,
                "failed": 0,
                "webhook": url,
                "webhook_events": "completed",
            },
        )
        pipe.hset(keys.job_outputs(job_id), "0", output)
    pipe.execute()
    return ids


def add_events(client: redis.Redis, ids: list[str]) -> None:
    pipe = client.pipeline(transaction=False)
    for job_id in ids:
        pipe.xadd(keys.EVENTS, {"job": job_id, "type": "job.completed", "at": now_ms()})
    pipe.execute()


def wait_for(check, timeout_s: float, what: str) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.01)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deliveries", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16, help="DLPIPE_WEBHOOK_CONCURRENCY")
    parser.add_argument("--stuck", type=int, default=0, help="deliveries to a receiver that never answers")
    parser.add_argument("--timeout-s", type=float, default=15.0, help="DLPIPE_WEBHOOK_TIMEOUT_S")
    args = parser.parse_args()
    secret = new_secret()
    fast, stuck = Receiver(secret), Receiver(secret, answer=False)
    with tempfile.TemporaryDirectory(prefix="dlpipe-webhook-bench-") as tmp:
        server, port = start_redis(Path(tmp) / "redis")
        redis_url = f"redis://127.0.0.1:{port}/0"
        client = redis.Redis.from_url(redis_url)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("DLPIPE_")},
            "PYTHONPATH": str(REPO),
            "DLPIPE_REDIS_URL": redis_url,
            "DLPIPE_WEBHOOK_SECRET": secret,
            "DLPIPE_WEBHOOK_ALLOW_PRIVATE": "true",
            "DLPIPE_WEBHOOK_CONCURRENCY": str(args.concurrency),
            "DLPIPE_WEBHOOK_TIMEOUT_S": str(args.timeout_s),
            "DLPIPE_LOG_LEVEL": "WARNING",
            "DLPIPE_READ_BLOCK_MS": "100",
        }
        notifier = subprocess.Popen([sys.executable, "-m", "workers.notifier"], cwd=REPO, env=env)
        try:
            wait_for(lambda: client.zcard(keys.WORKERS) > 0, 60, "the notifier's heartbeat")
            wait_for(lambda: len(client.smembers("rq:workers")) >= args.concurrency, 60, "its rq workers")
            # Warm-up: a few deliveries, not measured.
            add_events(client, write_jobs(client, "warm", 20, fast.url))
            wait_for(lambda: fast.received >= 20, 60, "the warm-up deliveries")
            fast.received, fast.times, fast.ids = 0, [], set()
            stuck_ids = write_jobs(client, "stuck", args.stuck, stuck.url)
            ids = write_jobs(client, "job", args.deliveries, fast.url)
            started = time.monotonic()
            add_events(client, stuck_ids + ids)
            wait_for(lambda: fast.received >= args.deliveries, 600, "every delivery")
            took = fast.times[-1] - started
            result = {
                "deliveries": args.deliveries,
                "deliveries_per_s": round(args.deliveries / took, 1),
                "seconds": round(took, 3),
                "concurrency": args.concurrency,
                "stuck_receivers_in_flight": args.stuck,
                "distinct_webhook_ids": len(fast.ids),
                "signatures_verified": fast.verified,
                "cpu_count": os.cpu_count(),
                "python": platform.python_version(),
            }
            print(json.dumps(result, indent=2))
        finally:
            notifier.send_signal(signal.SIGTERM)
            try:
                notifier.wait(timeout=args.timeout_s + 30)
            except subprocess.TimeoutExpired:
                notifier.kill()
            client.close()
            server.terminate()
            server.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
