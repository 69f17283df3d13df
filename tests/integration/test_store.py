"""The job state machine on a real redis-server: chains, fan-out and join, idempotence."""

from __future__ import annotations

import pytest
import redis

from shared import keys
from shared.job_record import JobRecord, job_view_from_redis
from shared.jobs import queue_new_job
from shared.messages import JobStatus, now_ms
from shared.pipeline_spec import parse_pipelines
from workers.store import StageResult, Store

GRAPH = {
    "models": {"m": {"class": "x.y:Z", "batching": {"max_batch_size": 4, "max_batch_delay_ms": 1}}},
    "pipelines": {
        "graph": {
            "input": "image",
            "stages": [
                {"name": "a", "kind": "preprocess", "fn": "x.y:a"},
                {"name": "b", "kind": "preprocess", "fn": "x.y:b", "needs": ["input"]},
                {"name": "m", "kind": "model", "model": "m", "needs": ["a"]},
                {"name": "join", "kind": "postprocess", "fn": "x.y:j", "needs": ["m", "b", "input"]},
            ],
        }
    },
}


def _new_job(client: redis.Redis, store: Store, job_id: str, n: int) -> None:
    pipe = client.pipeline()
    queue_new_job(
        pipe,
        JobRecord.new(
            id=job_id,
            pipeline=store.config.pipelines["graph"].name,
            total=n,
            metadata={"k": 1},
            created_ms=now_ms(),
        ),
        pipeline=store.config.pipelines["graph"],
        inputs=[{"v": i} for i in range(n)],
        ttl_s=3600,
    )
    pipe.execute()


def _view(client: redis.Redis, job_id: str):
    return job_view_from_redis(client.hgetall(keys.job(job_id)), client.hgetall(keys.job_outputs(job_id)))


def _drain(store: Store) -> int:
    """Run every stage by hand until no entry is left; returns the number of steps."""
    config = store.config
    cpu, model = config.cpu_streams(), list(config.model_streams().values())
    store.ensure_groups(cpu, keys.CPU_GROUP)
    store.ensure_groups(model, keys.MODEL_GROUP)
    steps = 0
    while True:
        did = 0
        for group, streams in ((keys.CPU_GROUP, cpu), (keys.MODEL_GROUP, model)):
            entries = store.read(group, "t", streams, count=10, block_ms=None)
            if not entries:
                continue
            values = store.load(entries)
            results = []
            for entry, vals in zip(entries, values):
                stage = entry.item.stage
                if stage == "a":
                    results.append(StageResult(entry, value={"a": vals[0]["v"]}))
                elif stage == "b":
                    results.append(StageResult(entry, value=vals[0]["v"] * 10))
                elif stage == "m":
                    if vals[0]["a"] == 1:
                        results.append(StageResult(entry, error="model says no"))
                    else:
                        results.append(StageResult(entry, value={"m": vals[0]["a"] + 100}))
                else:
                    m, b, original = vals
                    results.append(StageResult(entry, value={"sum": m["m"] + b, "orig": original["v"]}))
            store.complete(group, results)
            did += len(entries)
        steps += 1
        if not did:
            return steps


def test_graph_with_fan_out_and_join_completes_once(redis_client: redis.Redis) -> None:
    store = Store(redis_client, parse_pipelines(GRAPH), ttl_s=3600)
    _new_job(redis_client, store, "j1", 3)
    assert _view(redis_client, "j1").status == JobStatus.queued
    _drain(store)
    view = _view(redis_client, "j1")
    assert view.status == JobStatus.succeeded
    assert view.progress.done == 3 and view.progress.total == 3
    assert [o.status.value for o in view.outputs] == ["succeeded", "failed", "succeeded"]
    assert view.outputs[0].result == {"sum": 100, "orig": 0}
    assert view.outputs[2].result == {"sum": 102 + 20, "orig": 2}
    assert view.outputs[1].error == "model says no"
    assert view.started_at is not None and view.completed_at is not None
    assert view.metadata == {"k": 1}
    # One completion event, and no item hash left behind.
    assert redis_client.xlen(keys.EVENTS) == 1
    assert not redis_client.keys("dlpipe:item:*")


def test_redelivered_results_count_once(redis_client: redis.Redis) -> None:
    store = Store(redis_client, parse_pipelines(GRAPH), ttl_s=3600)
    _new_job(redis_client, store, "j2", 1)
    config = store.config
    store.ensure_groups(config.cpu_streams(), keys.CPU_GROUP)
    entries = store.read(keys.CPU_GROUP, "t", config.cpu_streams(), count=10, block_ms=None)
    by_stage = {e.item.stage: e for e in entries}
    assert set(by_stage) == {"a", "b"}
    # b done twice (a redelivery after a crash): the join is queued once, later.
    assert store.complete(keys.CPU_GROUP, [StageResult(by_stage["b"], value=5)]) == [1]
    assert store.complete(keys.CPU_GROUP, [StageResult(by_stage["b"], value=5)]) == [1]
    assert store.complete(keys.CPU_GROUP, [StageResult(by_stage["a"], value={"a": 0})]) == [1]
    _drain(store)
    assert _view(redis_client, "j2").outputs[0].result == {"sum": 105, "orig": 0}
    # A late duplicate of a finished item changes nothing.
    assert store.complete(keys.CPU_GROUP, [StageResult(by_stage["a"], value={"a": 0})]) == [0]
    view = _view(redis_client, "j2")
    assert view.progress.done == 1 and redis_client.xlen(keys.EVENTS) == 1


def test_all_items_failed_fails_the_job(redis_client: redis.Redis) -> None:
    store = Store(redis_client, parse_pipelines(GRAPH), ttl_s=3600)
    pipe = redis_client.pipeline()
    queue_new_job(
        pipe,
        JobRecord.new(
            id="j3",
            pipeline=store.config.pipelines["graph"].name,
            total=1,
            webhook="http://127.0.0.1:9/x",
            created_ms=now_ms(),
        ),
        pipeline=store.config.pipelines["graph"],
        inputs=[{"v": 1}],
        ttl_s=3600,
    )
    pipe.execute()
    _drain(store)
    view = _view(redis_client, "j3")
    assert view.status == JobStatus.failed
    assert view.error == "all 1 items failed"
    assert view.webhook is not None and view.webhook.url == "http://127.0.0.1:9/x"


@pytest.mark.parametrize("value", [object(), float("nan")])
def test_a_final_result_that_is_not_json_fails_the_item(redis_client: redis.Redis, value: object) -> None:
    config = parse_pipelines(
        {
            "models": {},
            "pipelines": {
                "p": {"input": "image", "stages": [{"name": "s", "kind": "postprocess", "fn": "a.b:c"}]}
            },
        }
    )
    store = Store(redis_client, config, ttl_s=3600)
    pipe = redis_client.pipeline()
    queue_new_job(
        pipe,
        JobRecord.new(id="j4", pipeline=config.pipelines["p"].name, total=1, created_ms=now_ms()),
        pipeline=config.pipelines["p"],
        inputs=[{}],
        ttl_s=3600,
    )
    pipe.execute()
    store.ensure_groups(config.cpu_streams(), keys.CPU_GROUP)
    (entry,) = store.read(keys.CPU_GROUP, "t", config.cpu_streams(), count=10, block_ms=None)
    assert store.complete(keys.CPU_GROUP, [StageResult(entry, value=value)]) == [3]
    out = _view(redis_client, "j4").outputs[0]
    assert out.status.value == "failed" and "not JSON" in out.error
