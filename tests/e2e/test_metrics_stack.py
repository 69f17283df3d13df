"""End to end: what `dlpipe up`'s /metrics says about a real job (real photo, real model).

The stack is shared with the other e2e tests, so this compares two scrapes, before and after."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.api import b64
from tests.support.classify import submit, wait_final
from tests.support.photos import corrupt_bytes, photo_bytes
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

PIPELINE = "image-classify"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(client: httpx.Client) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def get(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_a_job_of_the_running_stack(client: httpx.Client) -> None:
    before = scrape(client)
    assert get(before, "dlpipe_workers", kind="model") >= 1
    assert get(before, "dlpipe_workers", kind="notifier") >= 1
    inputs = [{"image_base64": b64(photo_bytes("chelsea.png"))}, {"image_base64": b64(corrupt_bytes())}]
    job = submit(client, inputs)
    assert wait_final(client, job["id"])["status"] == "succeeded"

    def grew(name: str, **labels: str) -> float:
        return get(after, name, **labels) - get(before, name, **labels)

    def counted() -> bool:
        nonlocal after
        after = scrape(client)
        return grew("dlpipe_stage_seconds_count", pipeline=PIPELINE, stage="top5") >= 1

    after: Samples = {}
    wait_until(counted, 10, "the last stage's observations")
    assert grew("dlpipe_jobs_total", pipeline=PIPELINE, status="succeeded") == 1
    assert grew("dlpipe_items_total", pipeline=PIPELINE, status="succeeded") == 1
    assert grew("dlpipe_items_total", pipeline=PIPELINE, status="failed") == 1
    assert grew("dlpipe_stage_seconds_count", pipeline=PIPELINE, stage="decode") == 2
    assert grew("dlpipe_stage_seconds_count", pipeline=PIPELINE, stage="classify") == 1
    assert grew("dlpipe_queue_wait_seconds_count", pipeline=PIPELINE, stage="classify") == 1
    assert grew("dlpipe_model_batch_size_sum", model="efficientnet_lite0") == 1
    assert grew("dlpipe_model_busy_seconds_total", model="efficientnet_lite0") > 0
    assert get(after, "dlpipe_backlog_items", pipeline=PIPELINE) == 0
