"""The webhook receiver of the tests that kill things: an HTTP server on 127.0.0.1 that records
every POST, answers 204 after a delay, and notes which answers reached a sender still there."""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Hook:
    """One POST the receiver got."""

    job_id: str
    webhook_id: str  # the `webhook-id` header ('' if none): the same on every retry of one event
    type: str  # job.completed, ...
    status: str  # the job's status in the body
    at: float  # time.monotonic() when it arrived
    k: int | None = None  # the submitter's job number (metadata.k), if the body carries it
    answered: bool = False  # answered 2xx on a connection its sender still held open
    headers: dict[str, str] = field(default_factory=dict)  # as sent (names lower-cased)
    body: bytes = b""  # as sent: what the signature covers
    peer: str = ""  # the sender's address


class Receiver:
    """An HTTP server on `host` (127.0.0.1) that records every webhook POST and answers 204, after
    `delay_s` (a receiver that takes its time: a notifier killed meanwhile has sent the
    webhook but not recorded it). A POST whose sender closed the connection meanwhile (its
    process died) gets no answer: it is not `answered`."""

    def __init__(self, delay_s: float = 0.0, host: str = "127.0.0.1") -> None:
        self.hooks: list[Hook] = []
        self.torn: list[int] = []  # the bytes of body that came of each POST cut mid-request
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("content-length", "0"))
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                    job = body.get("data", body)  # {"type", "timestamp", "data": job}, or the bare job
                    job_id = job["id"]
                except (ValueError, AttributeError, KeyError, TypeError):
                    # torn: its sender died while writing it (the head came, the body did not,
                    # or only part of it); no delivery, and no answer to give
                    with receiver._lock:
                        receiver.torn.append(len(raw))
                    self.close_connection = True
                    return
                hook = Hook(
                    job_id=str(job_id),
                    webhook_id=self.headers.get("webhook-id", ""),
                    type=str(body.get("type", "job.completed")),
                    status=str(job.get("status", "")),
                    at=time.monotonic(),
                    k=(job.get("metadata") or {}).get("k"),
                    headers={name.lower(): value for name, value in self.headers.items()},
                    body=raw,
                    peer=self.client_address[0],
                )
                with receiver._lock:
                    receiver.hooks.append(hook)
                if delay_s:
                    time.sleep(delay_s)  # the receiver's own latency, not a wait for something
                if peer_closed(self.connection):
                    return
                try:
                    self.send_response(204)
                    self.end_headers()
                except OSError:
                    return
                with receiver._lock:
                    hook.answered = True

            def log_message(self, *args: Any) -> None:
                pass

        # port 0: the kernel picks a free one on `host` (in whatever network namespace this runs)
        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self.server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    def count(self) -> int:
        with self._lock:
            return len(self.hooks)

    def completed(self) -> list[Hook]:
        with self._lock:
            return [h for h in self.hooks if h.type == "job.completed"]

    def answered_jobs(self) -> set[str]:
        """Jobs with a completion webhook answered 2xx."""
        return {h.job_id for h in self.completed() if h.answered}


def peer_closed(sock: socket.socket) -> bool:
    """Has the other end closed this connection (nothing left to read, not even a byte)?"""
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False  # open, nothing sent
    except OSError:
        return True  # reset
