"""End to end: real photos through HTTP into the running stack, and what a user sees."""

from __future__ import annotations

import json
import os
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from shared.embedded_redis import free_port
from tests.e2e.conftest import Stack
from tests.support.api import b64
from tests.support.classify import CAT_CLASSES, COFFEE_CLASSES, submit, top1, wait_final
from tests.support.photos import corrupt_bytes, photo_bytes
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e


def test_a_cat_photo_is_classified_as_a_cat(client: httpx.Client) -> None:
    job = submit(client, [{"image_base64": b64(photo_bytes("chelsea.png", size=(1920, 1080)))}])
    assert job["status"] == "queued" and job["progress"] == {"done": 0, "total": 1}
    done = wait_final(client, job["id"])
    assert done["status"] == "succeeded", done
    (output,) = done["outputs"]
    labels = output["result"]["labels"]
    assert output["status"] == "succeeded" and output["index"] == 0
    assert labels[0]["index"] in CAT_CLASSES and "cat" in labels[0]["label"].lower(), labels
    assert len(labels) == 5 and [x["score"] for x in labels] == sorted(
        (x["score"] for x in labels), reverse=True
    )
    assert done["progress"] == {"done": 1, "total": 1}
    assert done["created_at"] <= done["started_at"] <= done["completed_at"]


def test_a_corrupt_image_fails_its_item_with_a_reason_and_the_next_job_succeeds(client: httpx.Client) -> None:
    bad = wait_final(client, submit(client, [{"image_base64": b64(corrupt_bytes())}])["id"])
    assert bad["status"] == "failed"
    (output,) = bad["outputs"]
    assert output["status"] == "failed" and "image" in output["error"].lower(), output
    good = wait_final(client, submit(client, [{"image_base64": b64(photo_bytes("coffee.png"))}])["id"])
    assert good["status"] == "succeeded" and top1(good["outputs"][0]) in COFFEE_CLASSES


def test_outputs_keep_input_order_with_mixed_items(client: httpx.Client) -> None:
    inputs = [
        photo_bytes("chelsea.png"),
        corrupt_bytes(),
        photo_bytes("coffee.png"),
        photo_bytes("chelsea.png", fmt="PNG"),
    ]
    done = wait_final(client, submit(client, [{"image_base64": b64(x)} for x in inputs])["id"])
    assert done["status"] == "succeeded"
    assert [o["index"] for o in done["outputs"]] == [0, 1, 2, 3]
    assert [o["status"] for o in done["outputs"]] == ["succeeded", "failed", "succeeded", "succeeded"]
    assert top1(done["outputs"][0]) in CAT_CLASSES and top1(done["outputs"][3]) in CAT_CLASSES
    assert top1(done["outputs"][2]) in COFFEE_CLASSES


def test_multipart_upload(client: httpx.Client) -> None:
    files = [
        ("files", ("cat.jpg", photo_bytes("chelsea.png"), "image/jpeg")),
        ("files", ("coffee.jpg", photo_bytes("coffee.png"), "image/jpeg")),
    ]
    response = client.post(
        "/v1/pipelines/image-classify/jobs", files=files, data={"metadata": '{"user": "u1"}'}
    )
    assert response.status_code == 202, response.text
    done = wait_final(client, response.json()["id"])
    assert top1(done["outputs"][0]) in CAT_CLASSES and top1(done["outputs"][1]) in COFFEE_CLASSES
    assert done["metadata"] == {"user": "u1"}


def test_bad_requests_get_clear_4xx(client: httpx.Client) -> None:
    assert (
        client.post("/v1/pipelines/nope/jobs", json={"inputs": [{"image_base64": "aGk="}]}).status_code == 404
    )
    response = client.post("/v1/pipelines/image-classify/jobs", json={"inputs": [{"image_base64": "%%%"}]})
    assert response.status_code == 422 and "image_base64" in response.text
    response = client.post("/v1/pipelines/image-classify/jobs", json={"inputs": []})
    assert response.status_code == 422 and "inputs" in response.text
    assert client.get("/v1/jobs/does-not-exist").status_code == 404


def test_docs_pipelines_and_health(client: httpx.Client) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    assert client.get("/docs").status_code == 200
    assert "/v1/pipelines/image-classify/jobs" in client.get("/openapi.json").json()["paths"]
    names = [p["name"] for p in client.get("/v1/pipelines").json()]
    assert "image-classify" in names
    assert client.get("/v1/pipelines/image-classify").status_code == 200


class _Receiver(BaseHTTPRequestHandler):
    received: list[tuple[dict[str, str], bytes]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["content-length"]))
        type(self).received.append((dict(self.headers), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_the_webhook_receives_the_final_job_signed(stack: Stack, client: httpx.Client) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    # No DLPIPE_WEBHOOK_SECRET given: `dlpipe up` made one in its data dir.
    secret = (stack.log_path.parent / "data" / "webhook-secret").read_text().strip()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        job = submit(client, [{"image_base64": b64(photo_bytes("chelsea.png"))}], webhook=url)

        def delivered() -> tuple[dict[str, str], bytes] | None:
            return next((r for r in _Receiver.received if json.loads(r[1])["data"]["id"] == job["id"]), None)

        headers, raw = wait_until(delivered, timeout_s=60, what="the webhook delivery")
        message = Webhook(secret).verify(raw, headers)
        body = message["data"]
        assert message["type"] == "job.completed"
        assert body["status"] == "succeeded" and top1(body["outputs"][0]) in CAT_CLASSES
        # The job's final state was visible before the webhook went out.
        assert client.get(f"/v1/jobs/{job['id']}").json()["status"] == "succeeded"
    finally:
        server.shutdown()


def _children_running(stack: Stack, *argv_tail: str) -> set[int]:
    """Pids of the supervisor's children whose command line holds `argv_tail` (what `ps` shows)."""
    pids = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = [a.decode() for a in f.read().split(b"\0") if a]
        except (OSError, IndexError, ValueError):
            continue
        words = argv[1:]
        found = any(tuple(words[i : i + len(argv_tail)]) == argv_tail for i in range(len(words)))
        if ppid == stack.proc.pid and found:
            pids.add(int(entry))
    return pids


def test_a_killed_model_worker_is_restarted_and_work_goes_on(stack: Stack, client: httpx.Client) -> None:
    (pid,) = _children_running(stack, "worker", "model")
    os.kill(pid, signal.SIGKILL)
    wait_until(
        lambda: _children_running(stack, "worker", "model") - {pid},
        timeout_s=60,
        what="a restarted model worker",
    )
    done = wait_final(
        client, submit(client, [{"image_base64": b64(photo_bytes("chelsea.png"))}])["id"], timeout_s=90
    )
    assert done["status"] == "succeeded"
    assert "restart" in stack.log().lower()


def test_ps_shows_each_process_by_its_command(stack: Stack) -> None:
    for tail in (("api",), ("worker", "preprocess"), ("worker", "model"), ("worker", "notifier")):
        assert _children_running(stack, *tail), f"no child running `dlpipe {' '.join(tail)}`"
