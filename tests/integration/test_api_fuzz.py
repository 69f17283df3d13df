"""Fuzzing the request parsers of a real `dlpipe api` process (the bundled pipelines, a Redis of
the test's own, no workers) with generated requests: JSON and multipart bodies (valid ones
mutated, and junk), headers (content types, Idempotency-Key, Prefer, odd names and bytes) and
query strings, sent raw over a socket. After each one:

- no 5xx, ever (Redis is up);
- a 202 only when a job exists, and a new job only after a 202 (or a 200 with `Prefer: wait`) or
  an idempotent replay of one;
- `/healthz` still answers, fast.

Bounded: DLPIPE_FUZZ_EXAMPLES examples (default 400, a few seconds), no shrinking deadline, no
example database. Schemathesis (test_api_schemathesis.py) covers the schema; this covers what no
schema describes.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from collections.abc import Iterator

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.api.input_models import EXAMPLE_IMAGE_BASE64
from shared import keys
from shared.embedded_redis import start_redis
from tests.support.apiproc import ApiProcess, api_process
from tests.support.rawhttp import Answer, request

EXAMPLES = int(os.environ.get("DLPIPE_FUZZ_EXAMPLES", "400"))
PIPELINES = ["image-classify", "text-embed", "video-classify", "image-tag", "no-such-pipeline"]
HEALTH_S = 0.5


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ApiProcess, redis.Redis]]:
    folder = tmp_path_factory.mktemp("fuzz")
    proc, port = start_redis(folder)
    client = redis.Redis(port=port)
    try:
        # Small limits, so that generated bodies reach them; a short wait for `Prefer`.
        with api_process(
            folder,
            f"redis://127.0.0.1:{port}/0",
            max_inputs_per_job="8",
            max_input_bytes="4096",
            max_json_body_bytes="65536",
            max_json_values="2000",
            max_body_bytes="131072",
            max_wait_s="0.2",
        ) as api:
            yield api, client
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=10)


# -- what gets sent ------------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
# What JSON text can hold that Python's json module writes only when asked: NaN, lone surrogates, depth.
odd_json = st.sampled_from(
    [
        "NaN",
        "Infinity",
        "-Infinity",
        '"\\ud800"',
        '"\\udfff x"',
        "1e999",
        "[" * 40 + "]" * 40,
        '{"a":' * 1100 + "1" + "}" * 1100,
        "[" * 3000,
        '"\\u0000"',
        "18446744073709551616",
        '""',
    ],
)
image_inputs = st.fixed_dictionaries(
    {},
    optional={
        "image_base64": st.sampled_from(
            [
                EXAMPLE_IMAGE_BASE64,
                "",
                "!!",
                "data:image/jpeg;base64," + EXAMPLE_IMAGE_BASE64,
                base64.b64encode(os.urandom(8000)).decode(),
            ]
        )
        | st.text(max_size=30),
        "image_url": st.sampled_from(
            ["http://example.com/a.jpg", "ftp://x", "http://127.0.0.1/", "http://[::1]/"]
        )
        | st.text(max_size=30),
        "path": st.text(max_size=30),
        "text": st.text(max_size=30),
        "video_path": st.text(max_size=30),
        "interval": json_values,
        "fps": scalars,
    },
)
job_fields = st.fixed_dictionaries(
    {"inputs": st.lists(image_inputs, max_size=10) | json_values},
    optional={
        "metadata": json_values,
        "webhook": st.sampled_from(["https://hooks.example.com/x", "http://10.0.0.1/", "nope"]) | scalars,
        "webhook_events": st.lists(st.sampled_from(["started", "progress", "completed", "other"]), max_size=4)
        | json_values,
        "timeout_s": scalars,
        "unknown": json_values,
    },
)


@st.composite
def json_bodies(draw: st.DrawFn) -> bytes:
    data = draw(job_fields)
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=draw(st.booleans()))
    how = draw(st.sampled_from(["as is", "odd value", "cut", "bytes"]))
    if how == "odd value":
        text = (
            text.replace("null", draw(odd_json), 1)
            if "null" in text
            else text[:-1] + ',"metadata":' + draw(odd_json) + "}"
        )
    elif how == "cut":
        text = text[: draw(st.integers(0, len(text)))]
    body = text.encode("utf-8", "surrogatepass")
    if how == "bytes":
        body = draw(st.binary(max_size=200))
    return body


@st.composite
def multipart_bodies(draw: st.DrawFn) -> tuple[bytes, str]:
    boundary = draw(st.sampled_from(["b0undary", "----x", "a" * 70]))
    parts = []
    for _ in range(draw(st.integers(0, 5))):
        name = draw(
            st.sampled_from(["files", "metadata", "webhook", "webhook_events", "timeout_s", "options", "x"])
        )
        filename = draw(st.none() | st.text(max_size=20) | st.just("<img src=x onerror=alert(1)>.jpg"))
        content = draw(
            st.sampled_from(
                [
                    base64.b64decode(EXAMPLE_IMAGE_BASE64),
                    b"",
                    b"\xff\xd8junk",
                    b'{"a":1}',
                    b"\xe9t\xe9",
                    b'{"a":NaN}',
                    b'{"a":"\\ud800"}',
                    os.urandom(5000),
                ]
            )
            | st.binary(max_size=64)
        )
        disposition = f'form-data; name="{name}"' + ("" if filename is None else f'; filename="{filename}"')
        head = f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode("utf-8", "surrogatepass")
        parts.append(head + content + b"\r\n")
    body = b"".join(parts) + (f"--{boundary}--\r\n".encode() if draw(st.booleans()) else b"")
    return body, f"multipart/form-data; boundary={boundary}"


header_values = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
odd_headers = st.dictionaries(
    st.sampled_from(
        ["X-Odd", "Accept", "Authorization", "Prefer", "Idempotency-Key", "Expect", "Content-Encoding"]
    ),
    header_values,
    max_size=3,
)


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, dict[str, str], bytes]:
    """(method, path with query, headers, body)."""
    kind = draw(st.sampled_from(["valid", "json", "json", "multipart", "other body", "read"]))
    headers = draw(odd_headers)
    if kind == "valid":  # a good request, metadata and headers aside: the path that writes jobs
        data = {
            "inputs": [{"image_base64": EXAMPLE_IMAGE_BASE64}] * draw(st.integers(1, 3)),
            "metadata": draw(json_values),
        }
        if not isinstance(data["metadata"], dict):
            data["metadata"] = {"value": data["metadata"]}
        headers["Content-Type"] = "application/json"
        if draw(st.booleans()):
            headers["Idempotency-Key"] = draw(st.sampled_from(["v1", "v2"]))
        return "POST", "/v1/pipelines/image-classify/jobs", headers, json.dumps(data).encode()
    if kind == "read":
        job = draw(
            st.sampled_from(["0" * 32, "x" * 300, "../../etc", "%00", "a b"])
            | st.text("abc0-_%", max_size=10)
        )
        path = draw(
            st.sampled_from(
                [
                    f"/v1/jobs/{job}",
                    f"/v1/jobs/{job}/cancel",
                    f"/v1/jobs/{job}/webhook/redeliver",
                    "/v1/pipelines",
                    f"/v1/pipelines/{job}",
                    "/metrics",
                    "/docs",
                ]
            )
        )
        query = draw(
            st.sampled_from(["", "?wait_s=0.1", "?wait_s=-1", "?wait_s=1e999", "?wait_s=NaN", "?a=%ff&&="])
        )
        method = "POST" if path.endswith(("cancel", "redeliver")) else "GET"
        return method, path + query, headers, b""
    path = f"/v1/pipelines/{draw(st.sampled_from(PIPELINES))}/jobs" + draw(
        st.sampled_from(["", "?x=1", "?wait=%zz"])
    )
    if kind == "json":
        body = draw(json_bodies())
        headers["Content-Type"] = draw(
            st.sampled_from(
                [
                    "application/json",
                    "application/json; charset=utf-8",
                    "application/x+json",
                    "APPLICATION/JSON",
                ]
            )
        )
    elif kind == "multipart":
        body, headers["Content-Type"] = draw(multipart_bodies())
    else:
        body = draw(st.binary(max_size=100))
        headers["Content-Type"] = draw(header_values)
    if draw(st.booleans()):
        headers["Idempotency-Key"] = draw(st.sampled_from(["k1", "k2", "k3"]) | header_values)
    if draw(st.booleans()):
        headers["Prefer"] = draw(
            st.sampled_from(["wait=0.1", "wait=abc", "wait=-5", "respond-async, wait=1e309"])
        )
    return "POST", path, headers, body


# -- the invariants --------------------------------------------------------------------------


def jobs(client: redis.Redis) -> set[str]:
    return {
        key.decode().rsplit(":", 1)[1]
        for key in client.scan_iter("dlpipe:job:*", count=1000)
        if key.count(b":") == 2
    }


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=False,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)
@given(sent=requests())
def test_no_request_gets_a_5xx_or_makes_a_job_without_a_202(
    stack: tuple[ApiProcess, redis.Redis], sent: tuple[str, str, dict[str, str], bytes]
) -> None:
    api, client = stack
    method, path, headers, body = sent
    before = jobs(client)

    async def send() -> tuple[Answer, float]:
        answer = await request(api.port, method, path, headers=headers, body=body, timeout_s=30)
        started = time.perf_counter()
        health = await request(api.port, "GET", "/healthz", timeout_s=30)
        assert health.status == 200
        return answer, time.perf_counter() - started

    answer, health_s = asyncio.run(send())
    what = f"{method} {path} {headers} {body[:300]!r} -> {answer.status} {answer.body[:300]!r}"
    assert answer.status < 500, what
    assert health_s < HEALTH_S, f"/healthz took {health_s:.2f} s after {what}"
    made = jobs(client) - before
    replayed = answer.headers.get("idempotent-replayed") == "true"
    if answer.status in (200, 202) and path.split("?")[0].endswith("/jobs") and method == "POST":
        job_id = answer.json()["id"]
        assert client.exists(keys.job(job_id)), (
            f"answered {answer.status} for a job that is not there: {what}"
        )
        assert made == (set() if replayed else {job_id}), what
    else:
        assert made == set(), f"a job was written without a 202: {what}"


def test_the_fuzzer_reaches_the_parsers(stack: tuple[ApiProcess, redis.Redis]) -> None:
    """The generated requests are not all refused at the door: some make jobs, some get each 4xx."""
    api, client = stack
    seen: dict[int, int] = {}

    @settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(sent=requests())
    def run(sent: tuple[str, str, dict[str, str], bytes]) -> None:
        method, path, headers, body = sent
        answer = asyncio.run(request(api.port, method, path, headers=headers, body=body, timeout_s=30))
        seen[answer.status] = seen.get(answer.status, 0) + 1

    run()
    assert {202, 404, 422}.issubset(seen), seen
    assert any(status >= 400 for status in seen) and all(status < 500 for status in seen), seen
