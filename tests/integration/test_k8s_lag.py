"""What KEDA's triggers read (deploy/k8s/overlays/*/keda.yaml, services/keda.py) counts the right
entries through dlpipe's own stream handling, on a real Redis 7 (XINFO GROUPS has `lag` from 7.0).

lagCount reads the group's `lag` (XINFO GROUPS): the entries no worker has taken yet. It must be a
number all along: the groups are made from the stream's start after jobs were queued, entries
are acknowledged by the Lua that completes a stage, and streams are trimmed (XTRIM MINID). An
XDEL of an entry the group has not read yet makes Redis answer no lag (nil; checked on 7.0), and
the lag trigger would have nothing to scale on. pendingEntriesCount reads XPENDING: the entries
in the workers' hands.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from shared import keys
from shared.embedded_redis import free_port, redis_command, wait_for_redis
from shared.job_record import JobRecord
from shared.jobs import queue_new_job
from shared.messages import now_ms
from shared.pipeline_spec import parse_pipelines
from shared.redis import scripts
from workers.store import StageResult, Store

CONFIG = parse_pipelines(
    {
        "models": {"m": {"class": "x.y:Z", "batching": {"max_batch_size": 4, "max_batch_delay_ms": 1}}},
        "pipelines": {
            "p": {
                "input": "image",
                "stages": [
                    {"name": "a", "kind": "preprocess", "fn": "x.y:a"},
                    {"name": "m", "kind": "model", "model": "m"},
                    {"name": "z", "kind": "postprocess", "fn": "x.y:z"},
                ],
            }
        },
    }
)
CPU = keys.stream(keys.cpu_stream_name("p", "a"))
MODEL = keys.stream(keys.model_stream_name("m"))


@pytest.fixture
def redis7(tmp_path: Path) -> Iterator[redis.Redis]:
    """The machine's redis-server on a port of ours, if it is 7.x or newer (the bundled one is 6.2)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("no redis-server on PATH: XINFO GROUPS lag needs Redis 7+ (the bundled one is 6.2)")
    port = free_port()
    server = subprocess.Popen(redis_command(binary, port, tmp_path), stdout=subprocess.DEVNULL)
    try:
        wait_for_redis(f"redis://127.0.0.1:{port}/0", timeout_s=10, proc=server)
        client = redis.Redis(port=port)
        version = client.info("server")["redis_version"]
        if int(version.split(".")[0]) < 7:
            pytest.skip(f"redis-server {version} on PATH: XINFO GROUPS lag needs Redis 7+")
        yield client
        client.close()
    finally:
        server.kill()
        server.wait(timeout=10)


def counts(client: redis.Redis, stream: str, group: str) -> tuple[int | None, int]:
    """(lag, pending) as KEDA's lag and pending triggers read them."""
    (info,) = [g for g in client.xinfo_groups(stream) if g["name"].decode() == group]
    return info["lag"], client.xpending(stream, group)["pending"]


def queue(client: redis.Redis, job_id: str, items: int) -> None:
    pipe = client.pipeline()
    queue_new_job(
        pipe,
        JobRecord.new(id=job_id, pipeline=CONFIG.pipelines["p"].name, total=items, created_ms=now_ms()),
        pipeline=CONFIG.pipelines["p"],
        inputs=[{"v": i} for i in range(items)],
        ttl_s=3600,
    )
    pipe.execute()


def test_lag_counts_what_no_worker_has_taken_and_pending_what_they_hold(redis7: redis.Redis) -> None:
    store = Store(redis7, CONFIG, ttl_s=3600)
    trim = redis7.register_script(scripts.TRIM_STREAM)
    queue(redis7, "early", 10)  # accepted by the API before any worker is up
    store.ensure_groups(CONFIG.cpu_streams(), keys.CPU_GROUP)  # as each worker does when it starts
    store.ensure_groups(list(CONFIG.model_streams().values()), keys.MODEL_GROUP)
    assert counts(redis7, CPU, keys.CPU_GROUP) == (10, 0)
    assert counts(redis7, MODEL, keys.MODEL_GROUP) == (0, 0)

    taken = store.read(keys.CPU_GROUP, "w1", CONFIG.cpu_streams(), count=4, block_ms=None)
    assert len(taken) == 4
    assert counts(redis7, CPU, keys.CPU_GROUP) == (6, 4)

    store.complete(keys.CPU_GROUP, [StageResult(entry, value={"a": 1}) for entry in taken])
    assert counts(redis7, CPU, keys.CPU_GROUP) == (6, 0)
    assert counts(redis7, MODEL, keys.MODEL_GROUP) == (4, 0)  # the next stage's stream has them
    assert int(trim(keys=[CPU])[1]) >= 1  # the 4 done with are trimmed away...
    assert counts(redis7, CPU, keys.CPU_GROUP) == (6, 0)  # ...and the lag is still a number

    queue(redis7, "later", 5)
    assert counts(redis7, CPU, keys.CPU_GROUP) == (11, 0)
    rest = store.read(keys.CPU_GROUP, "w2", CONFIG.cpu_streams(), count=100, block_ms=None)
    assert len(rest) == 11 and counts(redis7, CPU, keys.CPU_GROUP) == (0, 11)
    store.complete(keys.CPU_GROUP, [StageResult(entry, value={"a": 1}) for entry in rest])
    trim(keys=[CPU])
    assert counts(redis7, CPU, keys.CPU_GROUP) == (0, 0)
    assert counts(redis7, MODEL, keys.MODEL_GROUP) == (15, 0)
