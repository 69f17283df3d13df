"""The chaos test's webhook receiver: a POST its sender died writing is no delivery."""

from __future__ import annotations

import json
import socket
from urllib.parse import urlsplit

from tests.e2e.receiver import Receiver
from tests.support.waiting import wait_until


def post(url: str, body: bytes, *, send_body: bytes | None = None) -> None:
    """POST `body`'s length as Content-Length, but write `send_body` (default: all of it), then close."""
    parts = urlsplit(url)
    head = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nwebhook-id: msg_1\r\n\r\n"
    ).encode()
    with socket.create_connection((parts.hostname, parts.port), timeout=5) as sock:
        sock.sendall(head + (body if send_body is None else send_body))
        if send_body is None:
            sock.recv(1024)  # the answer


def test_a_head_without_its_body_or_half_a_body_is_torn_and_a_whole_post_is_a_hook() -> None:
    body = json.dumps({"type": "job.completed", "data": {"id": "j1", "status": "succeeded"}}).encode()
    with Receiver() as receiver:
        post(receiver.url, body, send_body=b"")  # the sender died after the head
        post(receiver.url, body, send_body=body[:10])  # ... in the middle of the body
        wait_until(lambda: len(receiver.torn) == 2, 10, "the receiver to see both torn POSTs")
        assert receiver.hooks == []
        post(receiver.url, body)
        wait_until(lambda: receiver.answered_jobs() == {"j1"}, 10, "the whole POST to be answered")
        assert sorted(receiver.torn) == [0, 10]
        assert [(h.job_id, h.webhook_id, h.type) for h in receiver.hooks] == [
            ("j1", "msg_1", "job.completed")
        ]
