"""GET /metrics on a real redis-server, fed by real worker processes (preprocess, model,
notifier), read with prometheus_client's text parser. Webhooks go to 127.0.0.1 only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from services.api.app import create_app
from services.api.metrics import LAG_COUNT_CAP
from shared import keys
from shared.embedded_redis import free_port
from shared.pipeline_spec import load_pipelines
from shared.redis import scripts
from tests.stagefns import queue_job
from tests.support.hooks import Hook, settings_for, start_hook, wait_state
from tests.support.procs import Procs
from tests.support.waiting import wait_until
from tests.support.workers import is_final

API_KEY = "a-key-for-v1-routes"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(api: TestClient) -> Samples:
    response = api.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), float("nan"))


def test_metrics_show_a_run_of_real_worker_processes(
    redis_client: redis.Redis,
    redis_url: str,
    tmp_path: Path,
    procs: Procs,
    hooks: list[Hook],
) -> None:
    settings = settings_for(redis_url, tmp_path)
    config = load_pipelines(settings.pipelines_file)
    hook = start_hook(hooks, (503, {}), (204, {}))  # the first attempt fails, the retry (1 s) succeeds
    queue_job(
        redis_client,
        config.pipelines["sums"],
        "x1",
        [{"v": 1}, {"v": 2, "bad": "x"}, {"v": 3}],
        webhook=hook.url,
    )
    queue_job(redis_client, config.pipelines["boom"], "x2", [{"v": 1}])  # its model raises
    queue_job(redis_client, config.pipelines["tens"], "x3", [{"v": 1}, {"v": 2}])
    with TestClient(create_app(settings)) as api:
        before = scrape(api)  # no worker yet: everything waits
        assert value(before, "dlpipe_stream_backlog_items", stream="cpu.sums.prep", state="waiting") == 3
        assert value(before, "dlpipe_stream_backlog_items", stream="cpu.boom.prep", state="waiting") == 1
        assert value(before, "dlpipe_backlog_items", pipeline="sums") == 3
        assert value(before, "dlpipe_workers", kind="model") == 0
        assert value(before, "dlpipe_jobs_total", pipeline="sums", status="succeeded") == 0
        canceled = api.post("/v1/jobs/x3/cancel")
        assert canceled.status_code == 200, canceled.text

        procs.start(settings, "workers.preprocess", "--concurrency", "2")
        procs.start(settings, "workers.model_main", "--models", "summer,exploder")
        procs.start(settings, "workers.notifier")
        wait_until(
            lambda: is_final(redis_client, "x1") and is_final(redis_client, "x2"),
            60,
            f"jobs x1 and x2 to end\n{procs.logs()}",
        )
        wait_state(api, "x1", "succeeded", 30, f"x1's webhook to succeed\n{procs.logs()}")

        def settled() -> Samples | None:  # every stream drained and acknowledged, every worker seen
            found = scrape(api)
            backlog = [v for (name, _), v in found.items() if name == "dlpipe_stream_backlog_items"]
            workers = [value(found, "dlpipe_workers", kind=k) for k in ("preprocess", "model", "notifier")]
            return found if not any(backlog) and workers == [2, 1, 1] else None

        found = wait_until(settled, 30, f"the streams to drain\n{procs.logs()}")
    assert value(found, "dlpipe_items_total", pipeline="sums", status="succeeded") == 2
    assert value(found, "dlpipe_items_total", pipeline="sums", status="failed") == 1
    assert value(found, "dlpipe_items_total", pipeline="boom", status="failed") == 1
    assert value(found, "dlpipe_items_total", pipeline="tens", status="canceled") == 2
    assert value(found, "dlpipe_jobs_total", pipeline="sums", status="succeeded") == 1
    assert value(found, "dlpipe_jobs_total", pipeline="boom", status="failed") == 1
    assert value(found, "dlpipe_jobs_total", pipeline="tens", status="canceled") == 1
    assert value(found, "dlpipe_jobs_total", pipeline="sums", status="failed") == 0
    assert all(value(found, "dlpipe_backlog_items", pipeline=p) == 0 for p in ("sums", "boom", "tens"))
    stages = [("sums", "prep"), ("sums", "infer"), ("sums", "post"), ("boom", "infer")]
    counts = [value(found, "dlpipe_stage_seconds_count", pipeline=p, stage=s) for p, s in stages]
    assert counts == [3, 2, 2, 1]
    assert value(found, "dlpipe_queue_wait_seconds_count", pipeline="sums", stage="prep") == 3
    assert value(found, "dlpipe_queue_wait_seconds_count", pipeline="sums", stage="post") == 2
    # The items waited in their stream from before the workers started: a real wait, not ~0
    assert value(found, "dlpipe_queue_wait_seconds_sum", pipeline="sums", stage="prep") > 0.05
    assert value(found, "dlpipe_model_batch_size_sum", model="summer") == 2
    assert value(found, "dlpipe_model_batch_size_sum", model="exploder") == 1
    assert value(found, "dlpipe_model_failed_batches_total", model="exploder") == 1
    assert value(found, "dlpipe_model_failed_batches_total", model="summer") == 0
    assert value(found, "dlpipe_model_busy_seconds_total", model="summer") > 0
    busy_s = float(redis_client.hget(keys.model_stats("summer"), "forward_ms") or 0) / 1000
    assert value(found, "dlpipe_stage_seconds_sum", pipeline="sums", stage="infer") == pytest.approx(busy_s)
    attempts = "dlpipe_webhook_attempts_total"
    assert value(found, attempts, event="completed", outcome="failed", status_class="5xx") == 1
    assert value(found, attempts, event="completed", outcome="succeeded", status_class="2xx") == 1
    assert len(hook.posts) == 2


def stream_backlog(client: redis.Redis, stream: str, group: str, cap: int = LAG_COUNT_CAP) -> list[int]:
    script = client.register_script(scripts.STREAM_BACKLOG)
    [found] = script(keys=[stream], args=[cap, group])
    return [int(v) for v in found[:2]]


def test_stream_backlog_counts_waiting_and_in_progress_entries(any_redis: redis.Redis) -> None:
    client: Any = any_redis
    assert stream_backlog(client, "s", "g") == [0, 0]  # no stream
    for n in range(5):
        client.xadd("s", {"n": n})
    assert stream_backlog(client, "s", "g") == [5, 0]  # no group yet: everything waits
    client.xgroup_create("s", "g", id="0")
    client.xgroup_create("s", "other", id="$")  # another group is not counted
    [[_, taken]] = client.xreadgroup("g", "c", {"s": ">"}, count=2)
    client.xack("s", "g", taken[0][0])
    assert stream_backlog(client, "s", "g") == [3, 1]
    assert stream_backlog(client, "s", "g", cap=2)[1] == 1
    client.xreadgroup("g", "c", {"s": ">"})
    assert stream_backlog(client, "s", "g") == [0, 4]
    client.xadd("s", {"n": 5})
    assert stream_backlog(client, "s", "g") == [1, 4]


def test_metrics_need_no_api_key(redis_url: str, tmp_path: Path) -> None:
    settings = settings_for(redis_url, tmp_path, api_keys=SecretStr(API_KEY))
    with TestClient(create_app(settings)) as api:
        assert api.get("/v1/pipelines").status_code == 401
        assert value(scrape(api), "dlpipe_workers", kind="notifier") == 0


def test_metrics_answer_503_while_redis_is_unreachable(tmp_path: Path) -> None:
    settings = settings_for(f"redis://127.0.0.1:{free_port()}/0", tmp_path)  # nothing listens there
    with TestClient(create_app(settings)) as api:
        response = api.get("/metrics")
    assert response.status_code == 503, response.text
    assert "detail" in response.json()
