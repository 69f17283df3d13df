"""The job record's one codec (shared/job_record.py): the 202 body of a submit is the view read
back from the hash it wrote, for JSON and multipart submits with every field set."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from pydantic import SecretStr

from services.api.app import create_app
from shared import keys
from shared.job_record import InputGroup, JobRecord, job_view_from_redis
from shared.messages import JobStatus
from shared.priority import Priority
from tests.support.api import b64, fake_factory, make_settings, running, write_pipelines

pytestmark = pytest.mark.anyio
URL = "/v1/pipelines/img/jobs"
KEY = "a-key"
FIELDS: dict[str, Any] = {
    "metadata": {"name": "André", "n": [1, 2]},
    "webhook": "https://hooks.example.com/dlpipe",
    "webhook_events": ["started", "completed"],
    "timeout_s": 12.5,
    "priority": "high",
    "keep_inputs": True,
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _submit(tmp_path: Path, server: fakeredis.FakeServer, **request: Any) -> dict[str, Any]:
    settings = make_settings(write_pipelines(tmp_path), api_keys=SecretStr(KEY))
    app = create_app(settings, redis_factory=fake_factory(server))
    async with running(app) as api:
        response = await api.post(URL, headers={"Authorization": f"Bearer {KEY}"}, **request)
    assert response.status_code == 202, response.text
    return response.json()


def _read_back(server: fakeredis.FakeServer, job_id: str) -> dict[str, Any]:
    stored = fakeredis.FakeRedis(server=server).hgetall(keys.job(job_id))
    assert stored[b"owner"] != b"anon" and stored[b"kept"] == b"1"  # the owner and keep_inputs were set
    return json.loads(job_view_from_redis(stored, {}).model_dump_json())


async def test_the_202_body_of_a_json_submit_is_the_view_read_back(tmp_path: Path) -> None:
    server = fakeredis.FakeServer()
    body = await _submit(tmp_path, server, json={"inputs": [{"image_base64": b64(b"\xff\xd8x")}], **FIELDS})
    assert body["deadline_at"] and body["webhook"] and body["metadata"] and body["priority"] == "high"
    assert body == _read_back(server, body["id"])


async def test_the_202_body_of_a_multipart_submit_is_the_view_read_back(tmp_path: Path) -> None:
    server = fakeredis.FakeServer()
    form = [
        (
            name,
            (
                None,
                json.dumps(v)
                if isinstance(v, (dict, list))
                else str(v).lower()
                if isinstance(v, bool)
                else str(v),
            ),
        )
        for name, v in FIELDS.items()
        if name != "webhook_events"
    ]
    form += [("webhook_events", (None, "started,completed"))]
    files = [
        ("files", ("a.jpg", b"\xff\xd8x", "image/jpeg")),
        ("files", ("b.jpg", b"\xff\xd8y", "image/jpeg")),
    ]
    body = await _submit(tmp_path, server, files=[*files, *form])
    assert [o["source"] for o in body["outputs"]] == ["a.jpg", "b.jpg"] and body["deadline_at"]
    assert body == _read_back(server, body["id"])


def test_a_record_reads_back_as_it_was_written() -> None:
    record = JobRecord.new(
        id="j",
        pipeline="p",
        created_ms=1_000,
        total=3,
        priority=Priority.low,
        webhook="https://x.example/h",
        webhook_events=["completed"],
        metadata={"k": "v"},
        sources=["v.mp4", "b.jpg"],
        groups=[InputGroup(first=0, keys=["0.000", "0.500"], field="frames")],
        timeout_s=2.5,
    )
    assert JobRecord.from_hash(record.to_hash()) == record
    assert job_view_from_redis(record.to_hash(), {}) == record.to_view()
    assert record.to_view().status == JobStatus.queued and record.deadline_ms == 3_500
