"""Metrics as pure functions: what a worker tallies, how it is stored and read back, and how
the API renders it (checked with prometheus_client's own parsers)."""

from __future__ import annotations

import math
import re
from typing import Any

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from services.api.app import create_app
from services.api.metrics import Snapshot, StreamBacklog, render
from shared import keys, metrics
from shared.messages import WorkItem
from shared.settings import Settings
from tests.conftest import REPO
from workers.metrics import StageMetrics, entry_ms
from workers.store import Entry, StageResult


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text exposition: (name, sorted labels) -> value."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: dict[Any, float], name: str, **labels: str) -> float:
    return found[(name, tuple(sorted(labels.items())))]


# -- the tally (workers) ---------------------------------------------------------------


def test_observations_fall_in_the_first_bucket_at_or_above_them() -> None:
    tally = metrics.Tally()
    labels = ("p", "s")
    for seconds in (0.0, 0.001, 0.0011, 0.3, 60.0, 61.0, 1e9):
        tally.observe(metrics.STAGE_SECONDS, labels, seconds)
    fields = tally.take()[keys.METRICS]
    assert fields == {
        "stage_s|p|s|0.001": 2,  # 0 and exactly 0.001 (le means <=)
        "stage_s|p|s|0.0025": 1,
        "stage_s|p|s|0.5": 1,
        "stage_s|p|s|60": 1,
        "stage_s|p|s|+Inf": 2,
        "stage_s|p|s|sum": pytest.approx(0.0 + 0.001 + 0.0011 + 0.3 + 60.0 + 61.0 + 1e9),
    }
    assert tally.take() == {}  # taken: the next write carries only what comes after


def test_a_batch_of_items_is_n_observations_of_their_share() -> None:
    tally = metrics.Tally()
    tally.observe(metrics.STAGE_SECONDS, ("p", "infer"), 0.004, n=8)
    tally.add(metrics.ITEMS, ("p", "succeeded"), 3)
    tally.add(metrics.ITEMS, ("p", "succeeded"))
    fields = tally.take()[keys.METRICS]
    assert fields["stage_s|p|infer|0.005"] == 8
    assert fields["stage_s|p|infer|sum"] == pytest.approx(0.032)
    assert fields["items|p|succeeded"] == 4
    assert isinstance(fields["stage_s|p|infer|0.005"], int)  # HINCRBY, the sum HINCRBYFLOAT
    assert isinstance(fields["stage_s|p|infer|sum"], float)


def test_webhook_fields_name_the_status_class() -> None:
    assert metrics.webhook_field("completed", "succeeded", 204) == "webhook|completed|succeeded|2xx"
    assert metrics.webhook_field("started", "failed", 503) == "webhook|started|failed|5xx"
    assert metrics.webhook_field("completed", "dead", None) == "webhook|completed|dead|none"


def entry(pipeline: str, stage: str, entry_id: str, index: int = 0) -> Entry:
    item = WorkItem(job_id="j", index=index, pipeline=pipeline, stage=stage)
    return Entry(stream=keys.stream(f"cpu.{pipeline}.{stage}"), entry_id=entry_id, item=item)


def test_stage_metrics_time_stages_waits_and_batches() -> None:
    ticks = iter([10.0, 10.25])
    stage = StageMetrics(wall_ms=lambda: 5_000, timer=lambda: next(ticks))
    waiting = [entry("p", "prep", "4000-0"), entry("p", "prep", "4990-3"), entry("p", "prep", "6000-0")]
    stage.waited(waiting)  # 1 s, 10 ms, and a clock behind Redis's: 0
    result = stage.timed(lambda e, values: StageResult(e, value=values), waiting[0], [1])
    assert result.value == [1]
    batch = [StageResult(entry("p", "infer", "1-0", i)) for i in range(3)]
    batch.append(StageResult(entry("q", "embed", "1-1")))
    stage.forward("m", batch, 0.4)
    fields = stage.take()[keys.METRICS]
    assert fields["wait_s|p|prep|1"] == 1 and fields["wait_s|p|prep|0.01"] == 1
    assert fields["wait_s|p|prep|0.001"] == 1
    assert fields["wait_s|p|prep|sum"] == pytest.approx(1.01)
    assert fields["stage_s|p|prep|0.25"] == 1
    assert fields["batch|m|4"] == 1 and fields["batch|m|sum"] == 4
    assert fields["stage_s|p|infer|0.1"] == 3 and fields["stage_s|q|embed|0.1"] == 1
    assert fields["stage_s|p|infer|sum"] == pytest.approx(0.3)
    assert entry_ms("1795526885420-7") == 1795526885420


# -- reading back (the API) --------------------------------------------------------------


def test_parse_reads_back_what_was_written_and_skips_the_rest() -> None:
    tally = metrics.Tally()
    tally.observe(metrics.BATCH_SIZE, ("odd|model",), 3)
    tally.observe(metrics.BATCH_SIZE, ("odd|model",), 300)
    tally.add(metrics.JOBS, ("p", "failed"))
    stored = {k.encode(): str(v).encode() for k, v in tally.take()[keys.METRICS].items()}
    stored |= {
        b"nosuch|x": b"1",
        b"jobs|only-one-label": b"1",
        b"batch|m|wide": b"1",
        b"batch|m|nan": b"1",
        b"items|p|ok": b"NaN",
    }
    parsed = metrics.parse(stored)
    assert parsed.counters[metrics.JOBS] == {("p", "failed"): 1.0}
    assert parsed.counters[metrics.ITEMS] == {}
    assert list(parsed.histograms[metrics.BATCH_SIZE]) == [("odd|model",)]  # not ("m",): no valid field
    histogram = parsed.histograms[metrics.BATCH_SIZE][("odd|model",)]  # a model name may hold `|`
    assert histogram.buckets == {4.0: 1.0, math.inf: 1.0} and histogram.sum == 303.0
    cumulative = dict(histogram.cumulative(metrics.BATCH_BUCKETS))
    assert list(cumulative) == [*metrics.BATCH_BUCKETS, math.inf]
    assert (cumulative[2], cumulative[4], cumulative[256], cumulative[math.inf]) == (0, 1, 1, 2)


def snapshot() -> Snapshot:
    tally = metrics.Tally()
    for seconds in (0.004, 0.02, 0.02, 3.0):
        tally.observe(metrics.STAGE_SECONDS, ("img", "decode"), seconds)
    tally.observe(metrics.QUEUE_WAIT, ("img", "classify"), 0.002, n=2)
    tally.observe(metrics.BATCH_SIZE, ("effnet",), 2)
    tally.add(metrics.ITEMS, ("img", "succeeded"), 5)
    tally.add(metrics.ITEMS, ("img", "failed"))
    tally.add(metrics.JOBS, ("img", "succeeded"), 2)
    tally.add(metrics.JOBS, ("gone-pipeline", "failed"))
    tally.add(metrics.WEBHOOK_ATTEMPTS, ("completed", "failed", "5xx"))
    tally.add(metrics.WEBHOOK_ATTEMPTS, ("completed", "succeeded", "2xx"))
    return Snapshot(
        pipelines=["img", "txt"],
        streams={
            "cpu.img.decode": StreamBacklog(waiting=7, in_progress=2),
            "model.effnet": StreamBacklog(waiting=0, in_progress=1),
            "events": StreamBacklog(waiting=0, in_progress=0),
        },
        backlog={"img": 10, "txt": 0},
        counters=metrics.parse(tally.take()[keys.METRICS]),
        models={"effnet": {"batches": 1, "items": 2, "forward_ms": 1500.0, "failed_batches": 0}},
        workers={"preprocess": 2, "model": 1},
    )


def test_render_gives_every_family_in_prometheus_text() -> None:
    body, content_type = render(snapshot(), None)
    assert content_type.startswith("text/plain; version=0.0.4")
    found = samples(body.decode())
    assert value(found, "dlpipe_stream_backlog_items", stream="cpu.img.decode", state="waiting") == 7
    assert value(found, "dlpipe_stream_backlog_items", stream="cpu.img.decode", state="in_progress") == 2
    assert value(found, "dlpipe_stream_backlog_items", stream="model.effnet", state="in_progress") == 1
    assert value(found, "dlpipe_stream_backlog_items", stream="events", state="waiting") == 0
    assert value(found, "dlpipe_backlog_items", pipeline="img") == 10
    assert value(found, "dlpipe_items_total", pipeline="img", status="succeeded") == 5
    assert value(found, "dlpipe_items_total", pipeline="img", status="failed") == 1
    assert value(found, "dlpipe_items_total", pipeline="txt", status="canceled") == 0  # known, from 0
    assert value(found, "dlpipe_jobs_total", pipeline="img", status="succeeded") == 2
    assert value(found, "dlpipe_jobs_total", pipeline="gone-pipeline", status="failed") == 1
    stage = {"pipeline": "img", "stage": "decode"}
    assert value(found, "dlpipe_stage_seconds_bucket", **stage, le="0.005") == 1
    assert value(found, "dlpipe_stage_seconds_bucket", **stage, le="0.025") == 3
    assert value(found, "dlpipe_stage_seconds_bucket", **stage, le="2.5") == 3
    assert value(found, "dlpipe_stage_seconds_bucket", **stage, le="5.0") == 4
    assert value(found, "dlpipe_stage_seconds_bucket", **stage, le="+Inf") == 4
    assert value(found, "dlpipe_stage_seconds_count", **stage) == 4
    assert value(found, "dlpipe_stage_seconds_sum", **stage) == pytest.approx(3.044)
    assert value(found, "dlpipe_queue_wait_seconds_count", pipeline="img", stage="classify") == 2
    assert value(found, "dlpipe_model_batch_size_bucket", model="effnet", le="2.0") == 1
    assert value(found, "dlpipe_model_batch_size_bucket", model="effnet", le="1.0") == 0
    assert value(found, "dlpipe_model_busy_seconds_total", model="effnet") == 1.5
    assert value(found, "dlpipe_model_failed_batches_total", model="effnet") == 0
    hooks = {"event": "completed", "status_class": "5xx", "outcome": "failed"}
    assert value(found, "dlpipe_webhook_attempts_total", **hooks) == 1
    assert value(found, "dlpipe_workers", kind="preprocess") == 2
    assert value(found, "dlpipe_workers", kind="notifier") == 0  # a kind with none is 0, not absent


def test_render_speaks_openmetrics_when_asked() -> None:
    body, content_type = render(snapshot(), "application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    text = body.decode()
    assert text.endswith("# EOF\n")
    families = {f.name: f for f in parse_openmetrics(text)}
    assert families["dlpipe_items"].type == "counter"
    assert families["dlpipe_stage_seconds"].type == "histogram"


def test_an_empty_stack_renders_zeros_not_errors() -> None:
    body, _ = render(Snapshot(pipelines=["img"]), None)
    found = samples(body.decode())
    assert value(found, "dlpipe_jobs_total", pipeline="img", status="canceled") == 0
    assert value(found, "dlpipe_workers", kind="model") == 0


def test_the_schema_documents_metrics_as_open_text() -> None:
    app = create_app(Settings(redis_url="redis://unused", api_keys=SecretStr("a-key")))
    operation = app.openapi()["paths"]["/metrics"]["get"]
    assert "security" not in operation  # API keys guard /v1 only (docs/security.md)
    assert set(operation["responses"]["200"]["content"]) == {"text/plain", "application/openmetrics-text"}
    assert operation["tags"] == ["metrics"]


def test_the_metrics_page_lists_every_metric_and_no_other() -> None:
    rendered = {
        family.name + ("_total" if family.type == "counter" else "")
        for family in text_string_to_metric_families(render(snapshot(), None)[0].decode())
    }
    page = (REPO / "docs" / "metrics.md").read_text()
    listed = set(re.findall(r"^\| `(dlpipe_\w+)` \|", page, re.MULTILINE))
    assert rendered == listed
