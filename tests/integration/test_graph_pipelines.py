"""Chains and graphs of stages run by real worker processes, with small models the tests define.

A three-stage chain and a graph with fan-out (two stages on the input) and a join (one stage
needing the model's output, the other branch and the original input) share one model: their
items meet in the same batches.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import yaml

from shared import keys
from shared.job_record import JobRecord, job_view_from_redis
from shared.jobs import queue_new_job
from shared.messages import JobStatus, now_ms
from shared.pipeline_spec import load_pipelines
from tests.e2e.conftest import REPO, dlpipe_command
from tests.support.waiting import wait_until

PIPELINES = {
    "models": {
        "doubler": {
            "class": "tests.graphmodels:Doubler",
            "batching": {"max_batch_size": 16, "max_batch_delay_ms": 50},
        }
    },
    "pipelines": {
        "chain": {
            "input": "image",
            "stages": [
                {"name": "pair", "kind": "preprocess", "fn": "tests.graphfns:to_pair"},
                {"name": "double", "kind": "model", "model": "doubler"},
                {"name": "result", "kind": "postprocess", "fn": "tests.graphfns:chain_result"},
            ],
        },
        "graph": {
            "input": "image",
            "stages": [
                {"name": "pair", "kind": "preprocess", "fn": "tests.graphfns:to_pair"},
                {
                    "name": "shift",
                    "kind": "preprocess",
                    "fn": "tests.graphfns:plus_hundred",
                    "needs": ["input"],
                },
                {"name": "double", "kind": "model", "model": "doubler", "needs": ["pair"]},
                {
                    "name": "join",
                    "kind": "postprocess",
                    "fn": "tests.graphfns:join_result",
                    "needs": ["double", "shift", "input"],
                },
            ],
        },
    },
}


@pytest.fixture
def env(redis_url: str, tmp_path: Path) -> dict[str, str]:
    path = tmp_path / "pipelines.yaml"
    path.write_text(yaml.safe_dump(PIPELINES))
    base = {k: v for k, v in os.environ.items() if not k.startswith("DLPIPE_")}
    return {
        **base,
        "DLPIPE_REDIS_URL": redis_url,
        "DLPIPE_PIPELINES_FILE": str(path),
        "DLPIPE_READ_BLOCK_MS": "100",
        "PYTHONPATH": str(REPO),
    }


@pytest.fixture
def workers(env: dict[str, str], tmp_path: Path) -> Iterator[dict[str, subprocess.Popen]]:
    started: dict[str, subprocess.Popen] = {}

    def start(*argv: str) -> subprocess.Popen:
        log = (tmp_path / f"{'-'.join(argv)}.log").open("wb")
        proc = subprocess.Popen(
            [*dlpipe_command(), *argv], env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT
        )
        started[" ".join(argv)] = proc
        return proc

    yield start  # type: ignore[misc]
    for proc in started.values():
        proc.send_signal(signal.SIGTERM)
    for proc in started.values():
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_a_chain_and_a_graph_share_the_model_batches(
    redis_client: redis.Redis, env: dict[str, str], workers
) -> None:
    config = load_pipelines(Path(env["DLPIPE_PIPELINES_FILE"]))
    pipe = redis_client.pipeline()
    for job_id, name, values in (("c1", "chain", [1, 2, 3]), ("g1", "graph", [4, 5, 6])):
        queue_new_job(
            pipe,
            JobRecord.new(
                id=job_id, pipeline=config.pipelines[name].name, total=len(values), created_ms=now_ms()
            ),
            pipeline=config.pipelines[name],
            inputs=[{"v": v} for v in values],
            ttl_s=3600,
        )
    pipe.execute()

    workers("worker", "preprocess")
    model_stream = keys.stream(config.model_streams()["doubler"])
    # Every item waits at the model before a model worker exists: one batch must take them all.
    wait_until(lambda: redis_client.xlen(model_stream) == 6, timeout_s=60, what="6 items at the model")
    workers("worker", "model")

    def view(job_id: str):
        return job_view_from_redis(
            redis_client.hgetall(keys.job(job_id)), redis_client.hgetall(keys.job_outputs(job_id))
        )

    wait_until(
        lambda: view("c1").status.is_final and view("g1").status.is_final, timeout_s=90, what="both jobs"
    )
    chain, graph = view("c1"), view("g1")
    assert chain.status == graph.status == JobStatus.succeeded
    assert [o.result for o in chain.outputs] == [{"doubled": 2.0 * v, "batch": 6} for v in (1, 2, 3)]
    assert [o.result for o in graph.outputs] == [
        {"doubled": 2.0 * v, "batch": 6, "shifted": v + 100, "v": v} for v in (4, 5, 6)
    ]
    assert redis_client.xlen(keys.EVENTS) == 2  # each job completed once
