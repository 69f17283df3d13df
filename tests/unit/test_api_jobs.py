"""POST /v1/pipelines/{name}/jobs and GET /v1/jobs/{id}, against fakeredis."""

from __future__ import annotations

from typing import Any

import fakeredis
import httpx
import pytest
from redis.asyncio import Redis
from redis.exceptions import ReadOnlyError, ResponseError

from services.api.app import create_app
from services.api.errors import is_failing_over
from shared import codecs, keys
from shared.embedded_redis import free_port
from shared.jobs import OPEN_JOB_GRACE_S
from shared.settings import Settings
from tests.support.api import (
    MAX_BYTES,
    MAX_INPUTS,
    Part,
    assert_422_naming,
    b64,
    multipart,
    no_job_written,
    running,
)

pytestmark = pytest.mark.anyio

URL = "/v1/pipelines/img/jobs"
OK = b64(b"\xff\xd8image")


async def test_json_job_is_queued_with_location_and_pending_outputs(
    api: httpx.AsyncClient, sync_redis: fakeredis.FakeRedis, settings: Settings
) -> None:
    body = {"inputs": [{"image_base64": b64(b"one")}, {"image_base64": b64(b"two!")}], "metadata": {"k": [1]}}
    response = await api.post(URL, json=body)
    assert response.status_code == 202, response.text
    view = response.json()
    job_id = view["id"]
    assert response.headers["location"] == f"/v1/jobs/{job_id}"
    assert view["status"] == "queued" and view["pipeline"] == "img"
    assert view["progress"] == {"done": 0, "total": 2}
    assert [(o["index"], o["status"]) for o in view["outputs"]] == [(0, "pending"), (1, "pending")]
    assert view["metadata"] == {"k": [1]} and view["webhook"] is None
    # The job is in Redis: record with a TTL (past its own while it is open, so the deadline sweep
    # finds it), one input per item, one entry per item on the first stage; in the deadlines set.
    assert sync_redis.hget(keys.job(job_id), "status") == b"queued"
    assert settings.job_ttl_s < sync_redis.ttl(keys.job(job_id)) <= settings.job_ttl_s + OPEN_JOB_GRACE_S
    created_ms = int(sync_redis.hget(keys.job(job_id), "created_at"))
    assert sync_redis.zscore(keys.deadlines("img"), job_id) == created_ms + settings.job_ttl_s * 1000
    for index, raw in enumerate([b"one", b"two!"]):
        stored = sync_redis.hget(keys.item(job_id, index), keys.INPUT_FIELD)
        assert codecs.decode(stored) == {"image": raw}
    assert sync_redis.xlen(keys.stream("cpu.img.pre")) == 2
    # GET answers the same view.
    again = await api.get(response.headers["location"])
    assert again.status_code == 200 and again.json() == view


async def test_job_ids_are_unique(api: httpx.AsyncClient) -> None:
    ids = {(await api.post(URL, json={"inputs": [{"image_base64": OK}]})).json()["id"] for _ in range(3)}
    assert len(ids) == 3


async def test_data_url_prefix_is_accepted(api: httpx.AsyncClient, sync_redis: fakeredis.FakeRedis) -> None:
    response = await api.post(
        URL, json={"inputs": [{"image_base64": "data:image/png;base64," + b64(b"png")}]}
    )
    assert response.status_code == 202, response.text
    stored = sync_redis.hget(keys.item(response.json()["id"], 0), keys.INPUT_FIELD)
    assert codecs.decode(stored) == {"image": b"png"}


async def test_multipart_two_files_make_two_inputs_in_order(
    api: httpx.AsyncClient, sync_redis: fakeredis.FakeRedis
) -> None:
    files = [("files", ("a.jpg", b"first", "image/jpeg")), ("files", ("b.png", b"second", "image/png"))]
    data = {"webhook": "https://example.com/hook", "metadata": '{"user": "u1"}'}
    response = await api.post(URL, files=files, data=data)
    assert response.status_code == 202, response.text
    view = response.json()
    assert view["progress"]["total"] == 2 and len(view["outputs"]) == 2
    assert view["webhook"]["url"] == "https://example.com/hook" and view["metadata"] == {"user": "u1"}
    assert view["webhook"]["events"] == ["completed"] and view["webhook"]["state"] is None
    job_id = view["id"]
    inputs = [codecs.decode(sync_redis.hget(keys.item(job_id, i), keys.INPUT_FIELD)) for i in range(2)]
    assert inputs == [{"image": b"first"}, {"image": b"second"}]
    assert sync_redis.hget(keys.job(job_id), "webhook") == b"https://example.com/hook"


async def test_unknown_routes_answer_the_same_error_shape(api: httpx.AsyncClient) -> None:
    response = await api.get("/v1/nothing-here")
    assert response.status_code == 404 and response.json() == {"detail": "Not Found", "field": None}
    response = await api.delete(URL)
    assert response.status_code == 405 and response.json()["field"] is None


async def test_unknown_pipeline_is_404(api: httpx.AsyncClient, sync_redis: fakeredis.FakeRedis) -> None:
    response = await api.post("/v1/pipelines/nope/jobs", json={"inputs": [{"image_base64": OK}]})
    assert response.status_code == 404
    assert "nope" in response.json()["detail"] and "img" in response.json()["detail"]
    assert no_job_written(sync_redis)


@pytest.mark.parametrize("job_id", ["0123456789abcdef0123456789abcdef", "bad:id!", "x" * 65])
async def test_unknown_job_is_404(api: httpx.AsyncClient, job_id: str) -> None:
    response = await api.get(f"/v1/jobs/{job_id}")
    assert response.status_code == 404
    assert response.json()["detail"].startswith("no job")


BIG = b64(b"x" * (MAX_BYTES + 1))
CASES: list[tuple[str, Any, str, str]] = [
    (
        "bad base64",
        {"inputs": [{"image_base64": OK}, {"image_base64": OK}, {"image_base64": "no!"}]},
        "inputs[2].image_base64",
        "not valid base64",
    ),
    (
        "base64 with a line break",
        {"inputs": [{"image_base64": OK[:4] + "\n" + OK[4:]}]},
        "inputs[0].image_base64",
        "not valid base64",
    ),
    ("empty base64", {"inputs": [{"image_base64": ""}]}, "inputs[0].image_base64", "empty"),
    ("input too big", {"inputs": [{"image_base64": BIG}]}, "inputs[0].image_base64", f"{MAX_BYTES} bytes"),
    ("no inputs", {"inputs": []}, "inputs", "at least one"),
    ("inputs missing", {"webhook": "https://a.example"}, "inputs", "required"),
    ("inputs not a list", {"inputs": {"image_base64": OK}}, "inputs", "list"),
    (
        "too many inputs",
        {"inputs": [{"image_base64": OK}] * (MAX_INPUTS + 1)},
        "inputs",
        f"at most {MAX_INPUTS}",
    ),
    ("input not an object", {"inputs": ["abc"]}, "inputs[0]", "image_base64"),
    ("wrong input field", {"inputs": [{"image": OK}]}, "inputs[0].image", "not permitted"),
    ("no image field", {"inputs": [{}]}, "inputs[0]", "exactly one of image_base64, image_url or path"),
    (
        "two image fields",
        {"inputs": [{"image_base64": OK, "image_url": "https://a.example/x.jpg"}]},
        "inputs[0]",
        "got image_base64, image_url",
    ),
    ("base64 not a string", {"inputs": [{"image_base64": 5}]}, "inputs[0].image_base64", "string"),
    (
        "webhook not http",
        {"inputs": [{"image_base64": OK}], "webhook": "ftp://example.com/x"},
        "webhook",
        "http",
    ),
    ("webhook without host", {"inputs": [{"image_base64": OK}], "webhook": "https:///x"}, "webhook", "host"),
    ("webhook not a string", {"inputs": [{"image_base64": OK}], "webhook": 7}, "webhook", "URL"),
    ("metadata not an object", {"inputs": [{"image_base64": OK}], "metadata": [1]}, "metadata", "object"),
    ("unknown top-level field", {"inputs": [{"image_base64": OK}], "callback": "x"}, "callback", "unknown"),
    (
        "unknown priority",
        {"inputs": [{"image_base64": OK}], "priority": "urgent"},
        "priority",
        "'urgent' is not a priority (choose from high, normal, low)",
    ),
    (
        "priority not a string",
        {"inputs": [{"image_base64": OK}], "priority": 1},
        "priority",
        "not a priority",
    ),
    ("body not an object", [1, 2], "body", "object"),
]


@pytest.mark.parametrize(("body", "field", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_invalid_json_requests_are_422_naming_the_field(
    api: httpx.AsyncClient, sync_redis: fakeredis.FakeRedis, body: Any, field: str, fragment: str
) -> None:
    await assert_422_naming(api, URL, field, fragment, sync_redis, json=body)


async def test_malformed_json_is_422(api: httpx.AsyncClient) -> None:
    response = await api.post(URL, content=b'{"inputs": [', headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["field"] == "body" and "not valid JSON" in response.json()["detail"]


FILE: Part = ("files", "a.jpg", b"abc")


FORM_CASES: list[tuple[str, list[Part], str, str]] = [
    ("no files", [("webhook", None, b"https://a.example")], "files", "at least one"),
    ("file too big", [FILE, ("files", "b.jpg", b"x" * (MAX_BYTES + 1))], "files[1]", f"{MAX_BYTES} bytes"),
    ("empty file", [("files", "a.jpg", b"")], "files[0]", "empty"),
    ("too many files", [FILE] * (MAX_INPUTS + 1), "files", f"at most {MAX_INPUTS}"),
    ("metadata not JSON", [FILE, ("metadata", None, b"{nope")], "metadata", "not valid JSON"),
    ("metadata not an object", [FILE, ("metadata", None, b"[1]")], "metadata", "object"),
    ("metadata as a file", [FILE, ("metadata", "m.json", b"{}")], "metadata", "text field"),
    ("webhook not http", [FILE, ("webhook", None, b"file:///etc/passwd")], "webhook", "http"),
    (
        "webhook twice",
        [FILE, ("webhook", None, b"https://a.example"), ("webhook", None, b"https://b.example")],
        "webhook",
        "more than once",
    ),
    ("wrong file field", [("file", "a.jpg", b"abc")], "file", "unknown form field"),
    ("files as text", [("files", None, b"abc")], "files[0]", "file upload"),
    ("unknown priority", [FILE, ("priority", None, b"HIGH")], "priority", "not a priority"),
    (
        "priority twice",
        [FILE, ("priority", None, b"high"), ("priority", None, b"low")],
        "priority",
        "more than once",
    ),
]


@pytest.mark.parametrize(
    ("parts", "field", "fragment"), [c[1:] for c in FORM_CASES], ids=[c[0] for c in FORM_CASES]
)
async def test_invalid_multipart_requests_are_422_naming_the_field(
    api: httpx.AsyncClient, sync_redis: fakeredis.FakeRedis, parts: list[Part], field: str, fragment: str
) -> None:
    body, headers = multipart(parts)
    await assert_422_naming(api, URL, field, fragment, sync_redis, content=body, headers=headers)


async def test_hand_built_multipart_is_accepted(api: httpx.AsyncClient) -> None:
    """The helper above builds bodies the endpoint takes, so the 422s are about their content."""
    body, headers = multipart([FILE, ("files", "b.jpg", b"def"), ("metadata", None, b'{"a": 1}')])
    response = await api.post(URL, content=body, headers=headers)
    assert response.status_code == 202, response.text
    assert response.json()["progress"]["total"] == 2 and response.json()["metadata"] == {"a": 1}


@pytest.mark.parametrize("form", [False, True], ids=["json", "multipart"])
async def test_a_priority_is_kept_with_the_job_and_picks_its_streams(
    api: httpx.AsyncClient, sync_redis: fakeredis.FakeRedis, form: bool
) -> None:
    if form:
        body, headers = multipart([FILE, ("priority", None, b"high")])
        response = await api.post(URL, content=body, headers=headers)
    else:
        response = await api.post(URL, json={"inputs": [{"image_base64": OK}], "priority": "high"})
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    assert response.json()["priority"] == "high"
    assert sync_redis.hget(keys.job(job_id), "priority") == b"high"
    streams = {k.decode() for k in sync_redis.keys("dlpipe:stream:*")}
    assert streams and all(k.endswith(":high") for k in streams), streams
    default = await api.post(URL, json={"inputs": [{"image_base64": OK}], "priority": None})
    assert default.status_code == 202 and default.json()["priority"] == "normal"
    assert (await api.get(f"/v1/jobs/{job_id}")).json()["priority"] == "high"


async def test_multipart_without_boundary_is_422(api: httpx.AsyncClient) -> None:
    response = await api.post(URL, content=b"--x--", headers={"content-type": "multipart/form-data"})
    assert response.status_code == 422
    assert response.json()["field"] == "body"


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
async def test_other_content_types_are_415(api: httpx.AsyncClient, content_type: str | None) -> None:
    headers = {"content-type": content_type} if content_type else {}
    response = await api.post(URL, content=b"inputs=1", headers=headers)
    assert response.status_code == 415
    assert "application/json" in response.json()["detail"]


async def test_redis_down_is_503_not_500(settings: Settings) -> None:
    port = free_port()  # nothing listens there
    app = create_app(settings, redis_factory=lambda url: Redis.from_url(f"redis://127.0.0.1:{port}/0"))
    async with running(app) as client:
        post = await client.post(URL, json={"inputs": [{"image_base64": OK}]})
        get = await client.get("/v1/jobs/abc")
    assert post.status_code == 503 and post.json()["detail"] == "redis unavailable"
    assert get.status_code == 503 and get.json()["detail"] == "redis unavailable"


class _BrokenRedis(fakeredis.FakeAsyncRedis):
    def pipeline(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret internals")


async def test_unexpected_errors_are_500_without_a_traceback(settings: Settings) -> None:
    app = create_app(settings, redis_factory=lambda url: _BrokenRedis())
    async with running(app, raise_app_exceptions=False) as client:
        response = await client.post(URL, json={"inputs": [{"image_base64": OK}]})
    assert response.status_code == 500
    assert response.json() == {"detail": "internal error", "field": None}
    assert "secret" not in response.text and "Traceback" not in response.text


class _DemotedRedis(fakeredis.FakeAsyncRedis):
    """A primary just demoted in a failover: every call refused as a replica's would be."""

    def __init__(self, refusal: Exception, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.refusal = refusal

    def pipeline(self, *args: Any, **kwargs: Any) -> Any:
        raise self.refusal

    async def hget(self, *args: Any, **kwargs: Any) -> Any:
        raise self.refusal

    async def hmget(self, *args: Any, **kwargs: Any) -> Any:
        raise self.refusal


@pytest.mark.parametrize(
    "refusal",
    [
        ReadOnlyError("You can't write against a read only replica."),
        ResponseError("MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'."),
        ResponseError("NOREPLICAS Not enough good replicas to write."),
        # a script's redis.call() refused, as Redis 7.0 wraps it (a failover run in CI gave a 500)
        ResponseError(
            "Error running script (call to f_4bebff7d4a39cd1c8350905da678e9f2beb6329c): @user_script:18: "
            "@user_script: 18: -READONLY You can't write against a read only replica."
        ),
    ],
    ids=["READONLY", "MASTERDOWN", "NOREPLICAS", "READONLY-in-a-script"],
)
async def test_a_redis_failing_over_is_503_with_retry_after_not_500(
    settings: Settings, refusal: Exception
) -> None:
    app = create_app(settings, redis_factory=lambda url: _DemotedRedis(refusal))
    async with running(app, raise_app_exceptions=False) as client:
        post = await client.post(URL, json={"inputs": [{"image_base64": OK}]})
        cancel = await client.post("/v1/jobs/abc/cancel")
    for response in (post, cancel):
        assert response.status_code == 503, response.text
        assert "failing over" in response.json()["detail"] and response.headers["retry-after"] == "1"


@pytest.mark.parametrize(
    "message",
    [
        "ERR unknown command 'FOO'",
        "Error running script (call to f_ab): @user_script:3: user_script:3: Script attempted to access "
        "nonexistent global variable 'READONLY'",
        "WRONGTYPE Operation against a key holding the wrong kind of value",
    ],
)
def test_other_redis_refusals_are_not_taken_for_a_failover(message: str) -> None:
    assert not is_failing_over(ResponseError(message))
