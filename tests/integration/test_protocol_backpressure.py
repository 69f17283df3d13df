"""The protocol front doors under backpressure and timeouts, with the real clients: a real
`dlpipe api` process on a real redis-server and no workers, so jobs stay queued. A synchronous
request whose job does not end in DLPIPE_SYNC_TIMEOUT_S gets 504 (and its job expires); a full
backlog gives 429 with Retry-After; a missing key 401: each in its protocol's error shape."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import openai
import pytest
import redis
import tritonclient.http as triton

from tests.support.apiproc import ApiProcess, api_process

KEY = "bp-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
def api(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[ApiProcess]:
    folder = tmp_path_factory.mktemp("protocol-bp")
    settings = {
        "max_backlog": "1",
        "sync_timeout_s": "1",
        "deadline_sweep_interval_ms": "100",
        "api_keys": KEY,
    }
    with api_process(folder, redis_url, **settings) as running:
        yield running


def test_a_job_not_done_in_time_is_504_and_a_full_backlog_429(
    api: ApiProcess, redis_client: redis.Redis
) -> None:
    oai = openai.OpenAI(base_url=f"{api.url}/v1", api_key=KEY, max_retries=0)
    with pytest.raises(openai.APIStatusError) as late:
        oai.embeddings.create(model="all-MiniLM-L6-v2", input=["no worker will embed this"])
    assert late.value.status_code == 504 and late.value.body["code"] == "timeout", late.value.body
    assert "DLPIPE_SYNC_TIMEOUT_S" in late.value.body["message"]
    # Its job expired with the request: the backlog is free again, and one queued job fills it.
    with httpx.Client(base_url=api.url, headers=AUTH, timeout=30) as http:
        queued = http.post("/v1/pipelines/text-embed/jobs", json={"inputs": [{"text": "stays queued"}]})
        assert queued.status_code == 202, queued.text
        with pytest.raises(openai.RateLimitError) as full:
            oai.embeddings.create(model="text-embed", input="one more")
        assert full.value.response.headers["retry-after"].isdigit()
        assert (
            full.value.body["type"] == "rate_limit_error"
            and "DLPIPE_MAX_BACKLOG" in full.value.body["message"]
        )
        answer = http.post(
            "/v2/models/text-embed/infer",
            json={"inputs": [{"name": "texts", "shape": [1], "datatype": "BYTES", "data": ["one more"]}]},
        )
        assert answer.status_code == 429 and answer.headers["retry-after"].isdigit(), answer.text
        assert set(answer.json()) == {"error"} and "DLPIPE_MAX_BACKLOG" in answer.json()["error"]
    tc = triton.InferenceServerClient(api.url.removeprefix("http://"))
    try:
        tensor = triton.InferInput("images", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([b"\xff\xd8\xff not read by anyone"], dtype=np.object_))
        with pytest.raises(triton.InferenceServerException) as unkeyed:
            tc.infer("image-classify", [tensor])
        assert unkeyed.value.status() == "401" and "API key" in unkeyed.value.message()
        with pytest.raises(triton.InferenceServerException) as slow:
            tc.infer("image-classify", [tensor], headers=AUTH)
        assert slow.value.status() == "504", slow.value.message()
        assert tc.is_server_live() and not tc.is_server_ready()  # no workers
    finally:
        tc.close()
