"""Postprocess stages the model worker runs itself (workers/fusion.py), against fakeredis: which
stages fuse, and that a fused stage gives the item the same result, errors and metrics as the
same stage run by a preprocess worker, one stream hop less."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.sim.pipelines import SimSpec, document
from shared import keys, metrics
from shared.pipeline_spec import load_pipelines, parse_pipelines
from shared.settings import DEFAULT_PIPELINES_FILE
from tests.stagefns import job_view, pipelines, queue_job
from tests.support.worker_steps import SETTINGS, cpu_worker, drain, model_worker
from workers.fusion import Fusion, fused_stage
from workers.store import Store

UNFUSED = SETTINGS.model_copy(update={"fuse_postprocess": False})


def fused_of(config: Any) -> dict[tuple[str, str], str]:
    return {
        (p.name, s.name): post.name
        for p in config.pipelines.values()
        for s in p.stages
        if (post := fused_stage(p, s)) is not None
    }


def test_only_a_postprocess_that_is_a_model_stages_only_consumer_and_needs_nothing_else_fuses() -> None:
    bundled = fused_of(load_pipelines(DEFAULT_PIPELINES_FILE))
    assert bundled == {
        ("image-classify", "classify"): "top5",
        ("image-tag", "classify"): "labels",  # labels feeds two stages; it needs only classify
        ("text-embed", "embed"): "result",
        ("video-classify", "classify"): "top5",
    }  # image-tag's embed is not: `tags` is a join (needs embed and labels)
    sim = fused_of(parse_pipelines(document(SimSpec.published(), Path("/nonexistent"))))
    assert sim == {("sim-chain", "classify"): "result", ("sim-classify", "classify"): "top5"}
    # sim-chain's detect is followed by `crop`, a preprocess stage (a second decode): not fused.
    doc = pipelines()
    doc["pipelines"]["sums"]["stages"].append(
        {"name": "audit", "kind": "postprocess", "fn": "tests.stagefns:to_result", "needs": ["infer"]}
    )  # two consumers of infer: post and audit
    doc["pipelines"]["sums"]["stages"].append(
        {"name": "both", "kind": "postprocess", "fn": "tests.stagefns:echo", "needs": ["post", "audit"]}
    )
    assert ("sums", "infer") not in fused_of(parse_pipelines(doc))
    assert Fusion(parse_pipelines(pipelines()), ["summer"], enabled=False).stages == {}


def run_both_ways(client: Any, inputs: list[dict[str, Any]], fused: bool) -> tuple[Any, dict[str, Any]]:
    for key in client.keys("*"):
        client.delete(key)
    doc = pipelines()
    doc["pipelines"]["sums"]["stages"][-1]["fn"] = "tests.stagefns:picky_result"
    store = Store(client, parse_pipelines(doc), ttl_s=3600)
    queue_job(client, store.config.pipelines["sums"], "f1", inputs)
    cpu, gpu = cpu_worker(store), model_worker(store, ["summer"], SETTINGS if fused else UNFUSED)
    drain(cpu, gpu)
    stream = client.xlen(keys.stream("cpu.sums.post")) if client.exists(keys.stream("cpu.sums.post")) else 0
    return job_view(client, "f1"), {
        "post_stream": stream,
        "metrics": metrics.parse(client.hgetall(keys.METRICS)),
    }


def test_a_fused_stage_gives_the_same_results_and_errors_one_hop_less(client: Any) -> None:
    inputs = [{"v": 1}, {"v": 3}, {"v": 4}, {"v": 2, "bad": "x"}, {"v": 5}]  # sums 2, 6, 8, -, 10
    fused, seen_fused = run_both_ways(client, inputs, fused=True)
    unfused, seen_unfused = run_both_ways(client, inputs, fused=False)
    assert [o.model_dump() for o in fused.outputs] == [o.model_dump() for o in unfused.outputs]
    assert fused.status == unfused.status and fused.progress == unfused.progress
    assert [o.status.value for o in fused.outputs] == ["succeeded", "failed", "failed", "failed", "succeeded"]
    assert fused.outputs[1].error == "six is not allowed"  # an ItemError's message, as is
    assert fused.outputs[2].error == "post: ValueError: eight crashes"
    assert fused.outputs[0].result == {"sum": 2.0, "batch": 4}
    assert (seen_fused["post_stream"], seen_unfused["post_stream"]) == (0, 4)  # the hop saved
    counts = {}
    for name, seen in (("fused", seen_fused), ("unfused", seen_unfused)):
        stage_s = seen["metrics"].histograms[metrics.STAGE_SECONDS]
        waits = seen["metrics"].histograms[metrics.QUEUE_WAIT]
        counts[name] = (
            {k: sum(h.buckets.values()) for k, h in stage_s.items()},
            {k: sum(h.buckets.values()) for k, h in waits.items()},
        )
        assert seen["metrics"].counters[metrics.ITEMS] == {("sums", "succeeded"): 2, ("sums", "failed"): 3}
    assert (
        counts["fused"][0]
        == counts["unfused"][0]
        == {("sums", "prep"): 5, ("sums", "infer"): 4, ("sums", "post"): 4}
    )
    assert ("sums", "post") not in counts["fused"][1]  # no queue: it ran where the row was made
    assert counts["unfused"][1][("sums", "post")] == 4
