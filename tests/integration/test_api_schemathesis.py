"""Schemathesis against /openapi.json: generated requests (valid and invalid) to every
operation of the real API process (`dlpipe api`, the bundled pipelines) on a real Redis;
no answer is a 5xx, and every answer conforms to the schema (status code, content type,
headers, body), schema-valid requests are accepted and schema-violating ones refused (every
check schemathesis has).

The API runs with a data root, so `path` and `video_path` inputs are in its schema. Some
refusals of schema-valid requests depend on data no schema can describe: a path with nothing
there, a video's length, an Idempotency-Key used before (its body had passed every check by
then); DATA_REFUSALS names each of them, and only those are excused from the positive check.
So are cases schemathesis sends as valid that are not (`body_is_valid()`).

Bounded: a few examples per operation (DLPIPE_SCHEMATHESIS_EXAMPLES, default 25), no
shrinking deadline surprises (deadline off), no example database.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import pytest
import redis

from services.api.app import create_app
from services.api.input_models import EXAMPLE_IMAGE_BASE64
from shared.embedded_redis import free_port
from shared.heartbeat import add_heartbeat
from shared.pipeline_spec import load_pipelines
from shared.settings import DEFAULT_PIPELINES_FILE, Settings
from tests.conftest import REPO
from tests.support.waiting import wait_until

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is a dev dependency")
from hypothesis import HealthCheck, settings  # noqa: E402 - schemathesis brings hypothesis
from schemathesis import checks  # noqa: E402

EXAMPLES = int(os.environ.get("DLPIPE_SCHEMATHESIS_EXAMPLES", "25"))
API_KEY = "schemathesis-test-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}

_INPUT = r"inputs\[\d+\]"
# (field, what the detail says) of the 422s for rules no JSON Schema can state: what is on the
# server, a video's length, an earlier request's key, an interval's end after its start.
DATA_REFUSALS = [
    (rf"{_INPUT}\.(path|video_path)", r"no such file or folder|outside the data root|cannot resolve"),
    (rf"{_INPUT}\.path", r"the folder holds (no|more) images"),
    (rf"{_INPUT}\.video_path", r"not a file|not a readable video|cannot read the file"),
    (r"files\[\d+\]", r"not a readable video"),
    # A video's frames: where its interval lies against the video's length, and how many there are.
    (rf"({_INPUT}|options)\.(interval|fps)", r"the video's end|no frame time|more than this job can take"),
    (rf"{_INPUT}\.interval|options(\.interval)?", r"must be greater than start"),  # end > start
    (r"Idempotency-Key", r"was already used for a different request"),  # an earlier request's key
]


def body_is_valid(case: Any) -> bool:
    """Whether a case's body really is valid for its schema. Schemathesis cannot validate an
    object that holds file parts, nor does it read `contentMediaType` (an annotation in JSON
    Schema), so it can send a multipart body as valid that breaks a rule between fields
    (`webhook_events` needs a `webhook`), a text file that is not text, or JSON text that is not
    JSON. Here each file part stands as its text where the schema wants text, else as a
    stand-in string (empty or not, as it is), and JSON text must hold what `contentSchema` says."""
    if case.body is None or case.media_type is None or not isinstance(case.body, dict):
        return True
    operation = OPENAPI["paths"][case.operation.path][case.operation.method.lower()]
    content = operation.get("requestBody", {}).get("content", {}).get(case.media_type)
    if content is None:  # a media type the operation does not take: no positive case
        return True
    body_schema = content["schema"]
    name = body_schema["$ref"].rsplit("/", 1)[-1]
    properties = OPENAPI["components"]["schemas"][name].get("properties", {})
    body = {key: _as_text(value, properties.get(key, {})) for key, value in case.body.items()}
    return _is_valid(body, body_schema) and all(
        _holds_its_json(value, properties.get(key, {})) for key, value in body.items()
    )


def _is_valid(value: Any, schema: dict[str, Any]) -> bool:
    root = {**schema, "components": OPENAPI["components"]}
    return jsonschema_rs.validator_for(root, validate_formats=True).is_valid(value)


def _as_text(value: Any, schema: dict[str, Any]) -> Any:
    """A file part as the string the schema judges (None where text is wanted and it is not)."""
    if isinstance(value, list):
        return [_as_text(v, schema.get("items", {})) for v in value]
    data = getattr(value, "data", value)
    if not isinstance(data, bytes):
        return value
    if str(schema.get("contentMediaType", "")).startswith("text/"):
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return "file" if data else ""


def _holds_its_json(value: Any, schema: dict[str, Any]) -> bool:
    """A JSON text field (`contentMediaType: application/json`) holds JSON its `contentSchema` admits."""
    texts = [b for b in schema.get("anyOf", [schema]) if b.get("contentMediaType") == "application/json"]
    if not texts or not isinstance(value, str) or value == "":  # the empty field is a choice of its own
        return True
    try:
        parsed = json.loads(value)
    except ValueError:
        return False
    return any(_is_valid(parsed, branch.get("contentSchema", {})) for branch in texts)


def data_refusal(response: httpx.Response | Any) -> bool:
    """Whether a 422 refuses the request for one of the DATA_REFUSALS."""
    if response.status_code != 422:
        return False
    body = response.json()
    field, detail = body.get("field") or "", body.get("detail") or ""
    return any(re.fullmatch(f, field) and re.search(d, detail) for f, d in DATA_REFUSALS)


def pretend_workers(redis_url: str) -> None:
    """A live heartbeat for every stream and a notifier, so /readyz can answer 200 (its 503
    is tested where workers really stop: tests/e2e/test_redis_restart.py)."""
    client = redis.Redis.from_url(redis_url)
    config = load_pipelines(DEFAULT_PIPELINES_FILE)
    streams = config.work_streams()  # every stage's and model's, at every priority
    pipe = client.pipeline()
    add_heartbeat(pipe, "st-workers", "preprocess", streams, int(time.time() * 1000), 3_600_000)
    add_heartbeat(pipe, "st-notifier", "notifier", [], int(time.time() * 1000), 3_600_000)
    pipe.execute()
    client.close()


def data_root_with_examples(root: Path) -> Path:
    """The files the schema's examples name (`photos/cat.jpg`, `photos/`, `clips/cat.mp4`)."""
    from tests.support.videos import cat_then_coffee

    (root / "photos").mkdir()
    (root / "photos" / "cat.jpg").write_bytes(base64.b64decode(EXAMPLE_IMAGE_BASE64))
    (root / "clips").mkdir()
    (root / "clips" / "cat.mp4").write_bytes(cat_then_coffee())
    return root


@pytest.fixture(scope="module")
def api(redis_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Settings]]:
    """`dlpipe api` as a process, on the session's Redis; path inputs under a small data root.
    Yields its URL and the settings it runs with."""
    root = data_root_with_examples(tmp_path_factory.mktemp("data-root"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DLPIPE_")}
    env.update(
        {
            "DLPIPE_REDIS_URL": redis_server,
            "DLPIPE_PORT": str(port),
            "DLPIPE_DATA_ROOT": str(root),
            "DLPIPE_LOG_LEVEL": "WARNING",
            "DLPIPE_API_KEYS": API_KEY,  # every /v1 call needs it (ignored where keys are not known)
            "DLPIPE_WORKER_TTL_MS": str(3_600_000),  # the heartbeats written below stay live
            "DLPIPE_MAX_WAIT_S": "0.5",  # a generated `Prefer: wait=N` waits at most this (no worker runs)
            "DLPIPE_SYNC_TIMEOUT_S": "0.5",  # the synchronous protocol routes: 504 after this (no worker runs)
            "PYTHONUNBUFFERED": "1",
        }
    )
    log = tmp_path_factory.mktemp("api-log") / "api.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "api"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    pretend_workers(redis_server)

    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"dlpipe api exited:\n{Path(log).read_text()}")
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200

    try:
        wait_until(up, 60, "the api to answer")
        yield url, Settings(redis_url=redis_server, data_root=root, api_keys=API_KEY)
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        errors = [line for line in log.read_text().splitlines() if " ERROR " in line]
        assert errors == [], "the api logged errors:\n" + "\n".join(errors[:20])


def _openapi() -> dict[str, Any]:
    """The schema the API serves at /openapi.json (test_the_served_schema_is_this_one checks):
    where the data root is does not change it, that there is one does."""
    placeholder = Settings(redis_url="redis://127.0.0.1:1/0", data_root=Path("/data-root"), api_keys=API_KEY)
    return create_app(placeholder).openapi()


OPENAPI = _openapi()
# The synchronous protocol routes: a job no worker runs ends in 504 (DLPIPE_SYNC_TIMEOUT_S), as declared.
SYNC_PATHS = {"/v1/embeddings", "/v2/models/{name}/infer"}
schema = schemathesis.openapi.from_dict(OPENAPI)


def test_the_served_schema_is_this_one(api: tuple[str, Settings]) -> None:
    url, _ = api
    served = httpx.get(f"{url}/openapi.json", timeout=10).json()
    assert served == OPENAPI
    assert "/v1/pipelines/image-classify/jobs" in served["paths"]


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_the_api_answers_every_generated_request_as_its_schema_says(
    case: Any, api: tuple[str, Settings]
) -> None:
    url, _ = api
    response = case.call(base_url=url, headers=AUTH, timeout=30)
    if case.operation.path not in SYNC_PATHS:
        excused = (
            [checks.positive_data_acceptance] if data_refusal(response) or not body_is_valid(case) else []
        )
    elif response.status_code == 504:  # no worker runs the job
        excused = [checks.positive_data_acceptance, checks.not_a_server_error]
    else:  # a 400 for the protocols' own rules: a model's input name and datatype, a shape's count
        excused = [checks.positive_data_acceptance] if response.status_code == 400 else []
    if response.status_code < 400 and unknown_query(case):
        # Query parameters the operation does not declare are ignored, as HTTP APIs do (OpenAPI
        # does not forbid them); schemathesis counts adding one as a schema-violating request.
        excused = [*excused, checks.negative_data_rejection]
    case.validate_response(response, excluded_checks=excused)


def unknown_query(case: Any) -> bool:
    """Whether the case sends a query parameter its operation does not declare."""
    operation = OPENAPI["paths"][case.operation.path][case.method.lower()]
    declared = {p["name"] for p in operation.get("parameters", []) if p.get("in") == "query"}
    return bool(set(case.query or {}) - declared)
