"""Webhook receivers on 127.0.0.1 for the tests on a real redis-server, and what the webhook
tests do around them: settings, a job run to its end, the delivery's state read through the API,
rq's queue. (The `receiver` and `hooks` fixtures are in tests/integration/conftest.py.)"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import redis
from fastapi.testclient import TestClient
from rq import Queue
from rq.serializers import JSONSerializer
from standardwebhooks.webhooks import Webhook

from shared import keys
from shared.settings import Settings
from tests.stagefns import pipelines, queue_job
from tests.support.procs import Procs
from tests.support.waiting import wait_until
from tests.support.webhooks import SECRET
from tests.support.workers import is_final, make_settings, running, thread_workers


class Receiver:
    """A webhook receiver on 127.0.0.1 that records each POST and answers 204."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, str], bytes]] = []
        posts = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                posts.append((self.path, dict(self.headers), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Hook:
    """A receiver on 127.0.0.1 answering each POST from a script of (status, headers); the last
    answer repeats. Records (time, headers, body) of every POST; `hold` keeps answers back."""

    def __init__(self, *answers: tuple[int, dict[str, str]], port: int = 0) -> None:
        self.answers = list(answers) or [(204, {})]
        self.posts: list[tuple[float, dict[str, str], bytes]] = []
        self.hold = threading.Event()
        self.hold.set()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                hook.posts.append((time.monotonic(), dict(self.headers), body))
                hook.hold.wait(30)
                status, headers = hook.answers.pop(0) if len(hook.answers) > 1 else hook.answers[0]
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def verified(self) -> list[dict[str, Any]]:
        """Every POST, checked by standardwebhooks (raises if one does not verify)."""
        return [Webhook(SECRET).verify(body, headers) for _, headers, body in self.posts]

    def close(self) -> None:
        self.hold.set()
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Rig:
    """What a webhook test on a real redis-server works with (the `rig` fixture, in
    tests/integration/conftest.py): the test's Redis, its notifier processes, its receivers and
    the API in-process."""

    client: redis.Redis
    redis_url: str
    tmp_path: Path
    procs: Procs
    hooks: list[Hook]
    api: TestClient


def start_hook(hooks: list[Hook], *answers: tuple[int, dict[str, str]], port: int = 0) -> Hook:
    """A Hook, closed at the end of the test (`hooks` is the fixture's list)."""
    hook = Hook(*answers, port=port)
    hooks.append(hook)
    return hook


def settings_for(redis_url: str, tmp_path: Path, **more: Any) -> Settings:
    return make_settings(redis_url, tmp_path, pipelines()).model_copy(update=more)


def webhook_of(api: TestClient, job_id: str) -> dict[str, Any]:
    response = api.get(f"/v1/jobs/{job_id}")
    assert response.status_code == 200, response.text
    return response.json()["webhook"]


def wait_state(api: TestClient, job_id: str, state: str, timeout_s: float, what: str) -> dict[str, Any]:
    """Poll GET /v1/jobs/{id} until its webhook is in `state`; the webhook then."""

    def check() -> dict[str, Any] | None:
        hook = webhook_of(api, job_id)
        return hook if hook["state"] == state else None

    return wait_until(check, timeout_s, what)


def finish_job(client: redis.Redis, settings: Settings, job_id: str, url: str, **options: Any) -> None:
    """Run a one-item job through worker loops in this process until it is final."""
    store, cpu, model = thread_workers(client, settings)
    with running(cpu, model):
        queue_job(client, store.config.pipelines["sums"], job_id, [{"v": 1}], webhook=url, **options)
        wait_until(lambda: is_final(client, job_id), 30, f"job {job_id} to finish")


def delivery_queue(client: redis.Redis) -> Queue:
    return Queue(keys.WEBHOOK_QUEUE, connection=client, serializer=JSONSerializer)


def rq_idle(client: redis.Redis) -> bool:
    """Nothing queued, running or scheduled for a retry in rq."""
    queue = delivery_queue(client)
    return not (queue.count or queue.started_job_registry.count or queue.scheduled_job_registry.count)
