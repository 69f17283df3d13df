"""Overload, retries, cancel and deadlines on a real redis-server: the API in-process (httpx
ASGITransport), the real worker classes driven step by step (run_once), no sleeps.

- admission: 429 with Retry-After once a pipeline's backlog is at DLPIPE_MAX_BACKLOG, and
  admission again once its items finish; concurrent submits never overshoot by more than a job;
- Idempotency-Key: one job per key and request, also for 50 requests at once;
- cancel: a job stopped half-way ends `canceled`, nothing of it runs after, one job.completed;
- deadlines: items not finished by `timeout_s` fail as expired and later stages skip them;
- a decompression-bomb PNG fails its own output, and the worker goes on.
"""

from __future__ import annotations

import asyncio
import io
import struct
import zlib
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis
from PIL import Image

from services.api.app import create_app
from shared import keys
from shared.messages import now_ms
from shared.pipeline_spec import load_pipelines
from shared.redis import scripts
from shared.settings import Settings
from tests.stagefns import job_view
from tests.support.api import api_settings, b64, backlog, job_count, running, write_pipelines
from tests.support.stack import Stack
from tests.support.stages_by_hand import finish_everything
from workers import runtime
from workers.preprocess import PreprocessWorker
from workers.store import StageResult, Store
from workers.store import inputs as store_inputs
from workers.store import results as store_results

pytestmark = pytest.mark.anyio

URL = "/v1/pipelines/img/jobs"


def body(n: int, tag: str = "x") -> dict[str, Any]:
    return {"inputs": [{"image_base64": b64(f"{tag}{i}".encode())} for i in range(n)]}


# -- the API with the test pipeline (img: pre -> m -> post), stages finished by hand ----------


@pytest.fixture
async def api(tmp_path: Path, redis_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with running(create_app(api_settings(tmp_path, redis_url, max_backlog=5))) as client:
        yield client


async def test_over_the_backlog_cap_new_jobs_get_429_until_items_finish(
    api: httpx.AsyncClient, redis_client: redis.Redis, tmp_path: Path
) -> None:
    first = await api.post(URL, json=body(3))
    assert first.status_code == 202 and backlog(redis_client, "img") == 3
    # 3 < 5: admitted, and it may take the backlog over the cap by its own items (one job's worth).
    second = await api.post(URL, json=body(3))
    assert second.status_code == 202 and backlog(redis_client, "img") == 6
    refused = await api.post(URL, json=body(1))
    assert refused.status_code == 429, refused.text
    assert refused.headers["retry-after"] == "5"
    assert refused.json()["detail"] == (
        "pipeline 'img' is at capacity: 6 items accepted and not finished, at most 5 "
        "(DLPIPE_MAX_BACKLOG); retry after 5 s"
    )
    assert job_count(redis_client) == 2 and backlog(redis_client, "img") == 6
    # Still serving: reads work, the health check too.
    assert (await api.get(first.headers["location"])).status_code == 200
    assert (await api.get("/healthz")).status_code == 200
    # Every item finishes: the backlog is back to 0 and jobs are admitted again.
    assert finish_everything(redis_client, tmp_path / "pipelines.yaml") == 6
    assert backlog(redis_client, "img") == 0
    assert redis_client.zcard(keys.admissions("img")) == 0
    again = await api.post(URL, json=body(1))
    assert again.status_code == 202, again.text
    assert backlog(redis_client, "img") == 1


async def test_concurrent_submits_are_admitted_exactly_up_to_the_cap(
    api: httpx.AsyncClient, redis_client: redis.Redis
) -> None:
    answers = await asyncio.gather(*(api.post(URL, json=body(1, f"c{n}-")) for n in range(20)))
    codes = Counter(r.status_code for r in answers)
    assert codes == {202: 5, 429: 15}
    assert job_count(redis_client) == 5 and backlog(redis_client, "img") == 5


# -- Idempotency-Key ------------------------------------------------------------------------


async def test_the_same_key_and_body_answer_the_same_job(
    api: httpx.AsyncClient, redis_client: redis.Redis
) -> None:
    headers = {"Idempotency-Key": "order-0001"}
    first = await api.post(URL, json=body(2), headers=headers)
    assert first.status_code == 202, first.text
    assert "idempotent-replayed" not in first.headers
    again = await api.post(URL, json=body(2), headers=headers)
    assert again.status_code == 202
    assert again.json() == first.json()  # the first answer, replayed
    assert again.headers["location"] == first.headers["location"]
    assert again.headers["idempotent-replayed"] == "true"
    assert job_count(redis_client) == 1 and backlog(redis_client, "img") == 2
    assert 0 < redis_client.ttl(next(redis_client.scan_iter("dlpipe:idem:*"))) <= 24 * 3600
    # The same key with another body (or another pipeline): 422 naming the header.
    other = await api.post(URL, json=body(3), headers=headers)
    assert other.status_code == 422
    assert other.json()["field"] == "Idempotency-Key"
    assert "different request" in other.json()["detail"]
    assert job_count(redis_client) == 1
    # Another key is another job.
    assert (await api.post(URL, json=body(2), headers={"Idempotency-Key": "order-0002"})).json()["id"] != (
        first.json()["id"]
    )


async def test_a_multipart_retry_is_the_same_request_whatever_its_boundary(
    api: httpx.AsyncClient, redis_client: redis.Redis
) -> None:
    def multipart(boundary: str, content: bytes) -> tuple[bytes, dict[str, str]]:
        raw = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="a.jpg"\r\n'
                f"Content-Type: image/jpeg\r\n\r\n"
            ).encode()
            + content
            + f"\r\n--{boundary}--\r\n".encode()
        )
        return raw, {"content-type": f"multipart/form-data; boundary={boundary}", "Idempotency-Key": "up-1"}

    raw, headers = multipart("boundary-one", b"\xff\xd8pixels")
    first = await api.post(URL, content=raw, headers=headers)
    assert first.status_code == 202, first.text
    raw, headers = multipart("another-boundary-2", b"\xff\xd8pixels")
    again = await api.post(URL, content=raw, headers=headers)
    assert again.status_code == 202 and again.json()["id"] == first.json()["id"]
    raw, headers = multipart("boundary-one", b"\xff\xd8other pixels")
    assert (await api.post(URL, content=raw, headers=headers)).status_code == 422
    assert job_count(redis_client) == 1


async def test_fifty_concurrent_requests_with_one_key_make_one_job(
    api: httpx.AsyncClient, redis_client: redis.Redis
) -> None:
    headers = {"Idempotency-Key": "burst-7f3a"}
    answers = await asyncio.gather(*(api.post(URL, json=body(1), headers=headers) for _ in range(50)))
    assert [r.status_code for r in answers] == [202] * 50, {r.status_code: r.text for r in answers}
    ids = {r.json()["id"] for r in answers}
    assert len(ids) == 1
    assert job_count(redis_client) == 1
    assert redis_client.xlen(keys.stream("cpu.img.pre")) == 1  # one item queued, once
    assert backlog(redis_client, "img") == 1
    assert sum(r.headers.get("idempotent-replayed") == "true" for r in answers) == 49


async def test_a_refused_request_gives_its_key_back(
    api: httpx.AsyncClient, redis_client: redis.Redis, tmp_path: Path
) -> None:
    assert (await api.post(URL, json=body(5))).status_code == 202  # the backlog is at the cap
    headers = {"Idempotency-Key": "after-429"}
    assert (await api.post(URL, json=body(1, "k"), headers=headers)).status_code == 429
    finish_everything(redis_client, tmp_path / "pipelines.yaml")
    retried = await api.post(URL, json=body(1, "k"), headers=headers)
    assert retried.status_code == 202, retried.text
    assert "idempotent-replayed" not in retried.headers
    assert job_count(redis_client) == 2


# -- workers: the real classes, one step at a time ------------------------------------------


async def test_a_job_canceled_half_way_ends_canceled_and_nothing_of_it_runs_after(stack: Stack) -> None:
    stack.queue("c1", 20)
    stack.half_way()
    before = dict(stack.calls)
    assert before == {"to_vector": 16, "infer": 8, "to_result": 8}
    async with running(create_app(stack.settings)) as api:
        response = await api.post("/v1/jobs/c1/cancel")
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "canceled"
        stack.drain()
        assert dict(stack.calls) == before  # nothing ran after the cancel
        view = (await api.get("/v1/jobs/c1")).json()
        assert view["status"] == "canceled" and view["completed_at"] is not None
        assert view["error"] == "canceled: 12 of 20 items had not finished"
        assert view["progress"] == {"done": 8, "total": 20}
        statuses = [o["status"] for o in view["outputs"]]
        assert statuses == ["succeeded"] * 8 + ["canceled"] * 12
        assert view["outputs"][3]["result"] == {"sum": 6.0, "batch": 8}  # finished results stay
        assert stack.completed_events("c1") == 1
        assert backlog(stack.client, "sums") == 0
        assert stack.nothing_pending()  # every skipped entry was acknowledged
        again = await api.post("/v1/jobs/c1/cancel")
        assert again.status_code == 409 and again.json()["detail"].endswith("has already ended: canceled")
        assert stack.completed_events("c1") == 1
    # The workers go on with other jobs.
    stack.queue("next", 2)
    stack.drain()
    assert job_view(stack.client, "next").status.value == "succeeded"


async def test_an_item_in_a_stage_when_its_job_is_canceled_records_nothing(stack: Stack) -> None:
    stack.queue("c2", 3)  # to be canceled while its items are in prep
    stack.queue("c3", 3)  # ... in post, the final stage
    prep = keys.stream("cpu.sums.prep")
    taken = stack.store.read(keys.CPU_GROUP, "cpu-x", ["cpu.sums.prep"], 3, None)
    in_prep = (taken, stack.store.load(taken))
    assert stack.cpu.run_once(1) == 3 and stack.model.run_once(1) == 3  # c3 reaches post
    taken = stack.store.read(keys.CPU_GROUP, "cpu-x", ["cpu.sums.post"], 3, None)
    in_post = (taken, stack.store.load(taken))
    assert {e.item.job_id for e in in_prep[0]} == {"c2"} and {e.item.job_id for e in in_post[0]} == {"c3"}
    async with running(create_app(stack.settings)) as api:
        for job_id in ("c2", "c3"):
            assert (await api.post(f"/v1/jobs/{job_id}/cancel")).status_code == 200
    entries, values = in_prep
    results = [StageResult(e, value=np.ones(2, np.float32) * v[0]["v"]) for e, v in zip(entries, values)]
    assert stack.store.complete(keys.CPU_GROUP, results) == [0, 0, 0]
    entries, values = in_post
    results = [StageResult(e, value={"sum": 1.0}) for e in entries]
    assert stack.store.complete(keys.CPU_GROUP, results) == [0, 0, 0]
    for job_id in ("c2", "c3"):
        view = job_view(stack.client, job_id)
        assert view.status.value == "canceled" and view.progress.done == 0
        assert [o.status.value for o in view.outputs] == ["canceled"] * 3
        assert stack.completed_events(job_id) == 1
    model_stream = keys.stream(stack.store.config.model_streams()["summer"])
    assert stack.client.xlen(model_stream) == 3  # c3's three entries only: nothing of c2 went on
    assert stack.client.xlen(prep) == 6
    assert stack.nothing_pending()
    assert backlog(stack.client, "sums") == 0


def test_workers_skip_a_canceled_jobs_items_even_while_their_inputs_are_still_there(stack: Stack) -> None:
    """The API frees a canceled job's inputs; the workers do not count on it: they read the
    job's status with the items (Store.load) and acknowledge its entries unrun."""
    stack.queue("c4", 10)
    assert stack.cpu.run_once(1) == 8
    reply = stack.client.eval(
        scripts.CANCEL_JOB,
        4,
        keys.job("c4"),
        keys.job_outputs("c4"),
        keys.EVENTS,
        keys.backlog("sums"),
        now_ms(),
        600,
        "c4",
    )
    assert [int(reply[0]), reply[1]] == [1, b"canceled"]
    assert stack.client.exists(keys.item("c4", 9))
    before = dict(stack.calls)
    stack.drain()
    assert dict(stack.calls) == before == {"to_vector": 8}
    assert stack.nothing_pending()
    assert job_view(stack.client, "c4").status.value == "canceled"
    assert stack.completed_events("c4") == 1 and backlog(stack.client, "sums") == 0


async def test_items_past_the_jobs_deadline_fail_as_expired_and_later_stages_skip_them(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack.queue("d1", 20, timeout_s=30)
    stack.half_way()  # 0-7 done in time; 8-15 wait for the model, 16-19 for prep
    before = dict(stack.calls)
    real_now = store_inputs.now_ms
    for module in (store_inputs, store_results):  # the store's clock, where it reads it
        monkeypatch.setattr(module, "now_ms", lambda: real_now() + 31_000)  # 31 s later
    stack.drain()
    assert dict(stack.calls) == before  # no stage ran for an expired item
    view = job_view(stack.client, "d1")
    assert view.status.value == "succeeded"  # the usual rule: some items succeeded
    assert view.progress.done == 20 and view.completed_at is not None and view.deadline_at is not None
    assert [o.status.value for o in view.outputs] == ["succeeded"] * 8 + ["failed"] * 12
    assert {o.error for o in view.outputs[8:]} == {"expired: the job's timeout_s of 30 s passed"}
    assert stack.completed_events("d1") == 1
    assert backlog(stack.client, "sums") == 0
    assert stack.nothing_pending()


async def test_a_job_whose_items_all_expire_fails(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    stack.queue("d2", 3, timeout_s=0.5)
    real_now = store_inputs.now_ms
    for module in (store_inputs, store_results):
        monkeypatch.setattr(module, "now_ms", lambda: real_now() + 1_000)
    stack.drain()
    assert not stack.calls
    view = job_view(stack.client, "d2")
    assert view.status.value == "failed" and view.error == "all 3 items failed"
    assert {o.error for o in view.outputs} == {"expired: the job's timeout_s of 0.5 s passed"}


# -- a decompression bomb -------------------------------------------------------------------


def png(width: int, height: int) -> bytes:
    """A real 1-bit grayscale PNG of zeros: tiny on disk, width x height pixels once decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer = zlib.compressobj(9)
    row = b"\0" * (1 + (width + 7) // 8)  # filter byte + packed bits
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


DECODE_YAML = """\
models: {}
pipelines:
  img:
    input: image
    stages:
      - name: decode
        kind: preprocess
        fn: workers.transforms.image:decode_resize_crop
        params: {resize: 32, crop: 32, max_pixels: 1000000}
      - {name: post, kind: postprocess, fn: "json:loads"}
"""


async def test_a_decompression_bomb_fails_its_own_output_and_the_worker_goes_on(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    bomb = png(20_000, 20_000)  # 400 Mpx: past Pillow's own bomb limit
    over_cap = png(1_200, 1_000)  # 1.2 Mpx: over this pipeline's 1 Mpx cap
    assert len(bomb) < 200_000
    good = io.BytesIO()
    Image.new("RGB", (40, 40), (200, 10, 10)).save(good, format="PNG")
    pipelines_file = write_pipelines(tmp_path, DECODE_YAML)
    settings = Settings(redis_url=redis_url, pipelines_file=pipelines_file, read_block_ms=1)
    async with running(create_app(settings)) as api:
        inputs = [{"image_base64": b64(data)} for data in (bomb, over_cap, good.getvalue())]
        response = await api.post(URL, json={"inputs": inputs})
        assert response.status_code == 202, response.text
        store = Store(redis_client, load_pipelines(settings.pipelines_file), ttl_s=600)
        functions = runtime.resolve_stage_functions(store.config)
        functions["json:loads"] = lambda array: {"shape": list(array.shape)}
        worker = PreprocessWorker(store, settings, "cpu-1", functions=functions)
        worker.recover()
        while worker.run_once(1):
            pass
        view = (await api.get(response.headers["location"])).json()
    outputs = view["outputs"]
    assert [o["status"] for o in outputs] == ["failed", "failed", "succeeded"]
    assert outputs[0]["error"].startswith("image is too large")
    assert "over the 1 Mpx cap" in outputs[1]["error"]
    assert outputs[2]["result"] == {"shape": [32, 32, 3]}
    assert view["status"] == "succeeded"
