"""`dlpipe bench`'s pure parts: percentiles, the turn order, the ceiling, aggregation, the schema."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from bench import aggregate, report
from bench.runner import stage_order
from bench.stats import (
    ceiling,
    counters_delta,
    latency_summary,
    model_activity,
    percentile,
    ratio,
    turn_order,
)
from services.cli import build_parser
from shared.pipeline_spec import load_pipelines
from shared.settings import DEFAULT_PIPELINES_FILE
from tests.support.benchruns import sample_turns


@pytest.mark.parametrize("q", [0.0, 0.25, 0.5, 0.9, 0.95, 0.99, 1.0])
def test_percentile_matches_numpy_linear(q: float) -> None:
    values = [5.0, 1.0, 9.5, 3.25, 7.0, 2.0, 8.0]
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q * 100)))


def test_percentile_edges() -> None:
    assert percentile([4.0], 0.99) == 4.0
    with pytest.raises(ValueError):
        percentile([], 0.5)
    with pytest.raises(ValueError):
        percentile([1.0], 1.5)


def test_latency_summary_in_ms() -> None:
    summary = latency_summary([0.010, 0.020, 0.030, 0.040, 1.0])
    assert summary["p50_ms"] == 30.0
    assert summary["max_ms"] == 1000.0
    assert summary["mean_ms"] == 220.0
    assert latency_summary([]) == dict.fromkeys(("p50_ms", "p95_ms", "p99_ms", "mean_ms", "max_ms"))


def test_turn_order_interleaves_systems() -> None:
    assert turn_order(["A", "B", "C"], 3) == [
        (0, "A"),
        (0, "B"),
        (0, "C"),
        (1, "A"),
        (1, "B"),
        (1, "C"),
        (2, "A"),
        (2, "B"),
        (2, "C"),
    ]
    with pytest.raises(ValueError):
        turn_order(["A"], 0)
    with pytest.raises(ValueError):
        turn_order(["A", "A"], 1)


def test_ceiling_is_cores_over_cpu_seconds_per_job() -> None:
    # decode 6 ms + forward 30 ms + top-k 0.2 ms + 3.8 ms of API/Redis = 40 ms of CPU a job
    c = ceiling(2, {"decode": 0.006, "forward": 0.030, "topk": 0.0002}, overhead_cpu_s=0.0038)
    assert c["cpu_s_per_job"] == pytest.approx(0.040)
    assert c["jobs_per_s"] == pytest.approx(50.0)
    assert ceiling(1, {"x": 0.0})["jobs_per_s"] is None
    with pytest.raises(ValueError):
        ceiling(0, {"x": 1.0})
    with pytest.raises(ValueError):
        ceiling(2, {"x": -1.0})


def test_ratios_and_counter_deltas() -> None:
    assert ratio(30.0, 20.0) == 1.5
    assert ratio(None, 2.0) is None and ratio(1.0, 0.0) is None
    delta = counters_delta(
        {"m": {"batches": 10, "items": 20, "forward_ms": 1000.0}},
        {"m": {"batches": 30, "items": 80, "forward_ms": 4000.0}, "n": {"batches": 1}},
    )
    assert delta == {"m": {"batches": 20, "items": 60, "forward_ms": 3000.0}, "n": {"batches": 1}}
    activity = model_activity(delta["m"], wall_s=4.0)
    assert activity["mean_batch_size"] == 3.0
    assert activity["duty_cycle"] == 0.75
    # Two replicas forwarding 3 s in a 2 s window: each busy three quarters of the time.
    assert model_activity(delta["m"], wall_s=2.0, workers=2)["duty_cycle"] == 0.75
    assert model_activity({}, 1.0)["mean_batch_size"] is None


def test_stage_order_puts_needs_first() -> None:
    config = load_pipelines(DEFAULT_PIPELINES_FILE)
    names = [s.name for s in stage_order(config.pipelines["image-tag"])]
    assert names.index("tags") > names.index("embed") > names.index("label_text") > names.index("labels")
    assert names[0] == "decode"


def test_dlpipe_cli_passes_bench_flags_through() -> None:
    args = build_parser().parse_args(["bench", "--repeats", "1", "--duration-s", "5", "-h"])
    assert args.command == "bench"
    assert args.bench_args == ["--repeats", "1", "--duration-s", "5", "-h"]


def test_summary_takes_medians_and_ratios() -> None:
    s = aggregate.summarize(sample_turns(), cores=2)
    dl = s["http"]["image-classify"]["8"]["dlpipe"]
    assert dl["jobs_per_s"] == 30.0 and dl["jobs_per_s_each"] == [30.0, 32.0, 28.0]
    assert dl["latency_ms"] == {"p50": 250.0, "p95": 500.0, "p99": 750.0}
    assert s["limit"]["best"] == {"batch": 4, "threads": 2, "images_per_s": 50.0, "runs": 3}
    c = s["ceiling"]["image-classify"]
    assert c["compute_only"]["cpu_s_per_job"] == pytest.approx(0.0362)
    assert c["compute_only"]["jobs_per_s"] == pytest.approx(55.25, abs=0.01)
    oh = c["with_stack_overhead"]["8"]
    assert oh["cpu_s_per_job"] == pytest.approx(0.0362 + 0.0035)
    row = s["ratios"]["image-classify"]["8"]
    assert row["dlpipe/baseline"] == 1.5
    assert row["dlpipe/limit"] == 0.6
    assert row["dlpipe_duty_cycle"] == {"efficientnet_lite0": 0.9}
    assert s["failed_turns"] == [{"system": "ray", "repeat": 2, "error": "RuntimeError: did not start"}]


def _doc() -> dict:
    turns = sample_turns()
    result = {
        "dlpipe_settings": {"torch_threads": 1, "preprocess_concurrency": 1},
        "peers": {},
        "wall_s": 12.0,
        "turns": turns,
    }
    options = {"repeats": 3, "peer_threads": 2, "limit_threads": [1, 2]}
    return report.build(options, result, aggregate.summarize(turns, cores=2))


def test_result_document_matches_its_schema_and_renders() -> None:
    doc = _doc()
    assert report.validate(doc) == []
    text = report.table(doc)
    assert "dlpipe/baseline 1.50" in text and "FAILED turn ray" in text


def test_schema_check_names_what_is_wrong() -> None:
    doc = _doc()
    broken = copy.deepcopy(doc)
    del broken["machine"]
    assert report.validate(broken) == ["$.machine: missing or not <class 'dict'>"]
    broken = copy.deepcopy(doc)
    del broken["summary"]["http"]["image-classify"]["8"]["dlpipe"]["latency_ms"]["p99"]
    assert report.validate(broken) == [
        "$.summary.http.image-classify.8.dlpipe.latency_ms: needs p50, p95, p99"
    ]
