"""The Python client (`import dlpipe`) against a real `dlpipe up`: typed results, events, the job
list, cancel, idempotency, errors with the API's detail and field; and docs/client.md's example."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import dlpipe
from tests.e2e.clientfiles import CAT_CLASSES
from tests.e2e.conftest import REPO, Stack
from tests.support.photos import FHD, photo_bytes

pytestmark = pytest.mark.e2e


@pytest.fixture
def api(stack: Stack) -> Iterator[dlpipe.Client]:
    with dlpipe.Client(stack.base_url) as client:
        yield client


def test_submit_and_wait_gives_the_apis_typed_job(api: dlpipe.Client, tmp_path: Path) -> None:
    cat = tmp_path / "cat.jpg"
    cat.write_bytes(photo_bytes("chelsea.png"))
    job = api.submit(
        "image-classify",
        files=[cat, ("coffee.jpg", photo_bytes("coffee.png"))],
        wait=True,
        metadata={"who": "test"},
    )
    assert isinstance(job, dlpipe.JobView) and job.status is dlpipe.JobStatus.succeeded
    assert [o.source for o in job.outputs] == ["cat.jpg", "coffee.jpg"] and job.metadata == {"who": "test"}
    assert job.outputs[0].status is dlpipe.ItemStatus.succeeded
    assert job.outputs[0].result["labels"][0]["index"] in CAT_CLASSES
    assert api.job(job.id) == job and api.wait(job.id) == job
    text = api.submit("text-embed", inputs=[{"text": "a cat on a mat"}], wait=30)
    assert text.status is dlpipe.JobStatus.succeeded and len(text.outputs[0].result["embedding"]) == 384


def test_events_follow_a_job_to_its_end(api: dlpipe.Client) -> None:
    job = api.submit("image-classify", files=[("a.jpg", photo_bytes("coffee.png", size=FHD))] * 8)
    events = list(api.events(job.id))
    outputs = [e.data for e in events if e.type == "output"]
    assert sorted(o.index for o in outputs) == list(range(8)) and all(
        isinstance(o, dlpipe.ItemOutput) for o in outputs
    )
    assert events[-1].type == "completed" and events[-1].data.status is dlpipe.JobStatus.succeeded
    assert events[-1].id is not None
    late = list(api.events(job.id))  # a late client: `completed` at once
    assert [e.type for e in late] == ["completed"]


def test_the_job_list_cancel_and_idempotency(api: dlpipe.Client) -> None:
    fhd = ("fhd.jpg", photo_bytes("astronaut.png", size=FHD))
    big = api.submit("image-classify", files=[fhd] * 150, idempotency_key="client-test-big")
    assert api.submit("image-classify", files=[fhd] * 150, idempotency_key="client-test-big").id == big.id
    canceled = api.cancel(big.id)
    assert canceled.status is dlpipe.JobStatus.canceled
    with pytest.raises(dlpipe.ConflictError, match="already ended"):
        api.cancel(big.id)
    listed = list(api.jobs(pipeline="image-classify", status="canceled", page_size=2))
    assert big.id in [s.id for s in listed] and all(isinstance(s, dlpipe.JobSummary) for s in listed)
    assert all(s.status is dlpipe.JobStatus.canceled for s in listed)


def test_errors_carry_the_apis_detail_and_field(api: dlpipe.Client) -> None:
    with pytest.raises(dlpipe.InvalidRequestError) as caught:
        api.submit("image-classify", inputs=[{"image_base64": "not base64!"}])
    assert caught.value.status_code == 422 and caught.value.field == "inputs[0].image_base64"
    assert "base64" in caught.value.detail
    with pytest.raises(dlpipe.NotFoundError, match="no job"):
        api.job("0" * 32)
    with pytest.raises(dlpipe.NotFoundError, match="no pipeline"):
        api.submit("no-such-pipeline", files=[b"x"])
    assert "image-classify" in [p.name for p in api.pipelines()]


def test_the_async_client(stack: Stack) -> None:
    async def main() -> None:
        async with dlpipe.AsyncClient(stack.base_url) as client:
            jobs = await asyncio.gather(
                *(
                    client.submit(
                        "image-classify", files=[("cat.jpg", photo_bytes("chelsea.png"))], wait=True
                    )
                    for _ in range(3)
                )
            )
            assert all(j.status is dlpipe.JobStatus.succeeded for j in jobs)
            events = [e async for e in client.events(jobs[0].id)]
            assert events[-1].type == "completed"
            assert [s async for s in client.jobs(limit=2)]

    asyncio.run(main())


GUIDE = REPO / "docs" / "client.md"


def test_the_guides_example_runs_as_written(stack: Stack, tmp_path: Path) -> None:
    (block,) = re.findall(r"```python\n(# example\.py\n.*?)```", GUIDE.read_text(), re.S)
    (tmp_path / "example.py").write_text(block)
    (tmp_path / "cat.jpg").write_bytes(photo_bytes("chelsea.png"))
    env = {**os.environ, "DLPIPE_URL": stack.base_url, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "example.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("succeeded ") and "cat" in lines[0].lower(), lines
    assert sorted(x for x in lines if x.startswith("output")) == ["output 0 succeeded", "output 1 succeeded"]
    assert "completed 2 of 2" in lines and "refused: inputs[0].text" in lines
    assert lines[-1] == "jobs: 5"
