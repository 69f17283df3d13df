"""`dlpipe worker model --replicas 2`: two model worker processes under one parent share the
model streams; one that dies is restarted, and a SIGTERM stops them all cleanly."""

from __future__ import annotations

import signal
from pathlib import Path

import psutil
import redis

from shared import keys
from shared.pipeline_spec import load_pipelines
from tests.stagefns import pipelines, queue_job
from tests.support.procs import Procs
from tests.support.waiting import wait_for
from tests.support.workers import is_final, make_settings


def _model_workers(client: redis.Redis) -> dict[str, int]:
    """Live model workers' ids -> pid (from their heartbeat hashes)."""
    found = {}
    for worker_id in client.zrange(keys.WORKERS, 0, -1):
        fields = client.hgetall(keys.worker(worker_id.decode()))
        if fields.get(b"kind") == b"model":
            found[worker_id.decode()] = int(worker_id.decode().split("-")[-2])
    return found


def _run_jobs(client: redis.Redis, settings, prefix: str, n: int, logs) -> None:  # type: ignore[no-untyped-def]
    spec = load_pipelines(settings.pipelines_file).pipelines["sums"]
    for i in range(n):
        queue_job(client, spec, f"{prefix}{i}", [{"v": i}, {"v": i + 1}])
    wait_for(lambda: all(is_final(client, f"{prefix}{i}") for i in range(n)), 60, f"{n} jobs\n{logs()}")


def test_replicas_share_the_models_streams_and_one_that_dies_is_replaced(
    redis_client: redis.Redis, redis_url: str, tmp_path: Path, procs: Procs
) -> None:
    settings = make_settings(redis_url, tmp_path, pipelines())
    pre = procs.start(settings, "workers.preprocess", "--concurrency", "1")
    parent = procs.start(settings, "services.cli", "worker", "model", "--models", "summer", "--replicas", "2")
    wait_for(lambda: len(_model_workers(redis_client)) == 2, 60, f"2 model replicas\n{procs.logs()}")
    children = {p.pid for p in psutil.Process(parent.pid).children()}
    assert set(_model_workers(redis_client).values()) == children  # each child is one consumer

    _run_jobs(redis_client, settings, "a", 20, procs.logs)
    consumers = redis_client.xinfo_consumers(keys.stream("model.summer"), keys.MODEL_GROUP)
    assert len(consumers) == 2

    victim = min(children)
    psutil.Process(victim).send_signal(signal.SIGKILL)

    def replaced() -> bool:
        now = {p.pid for p in psutil.Process(parent.pid).children()}
        serving = set(_model_workers(redis_client).values())
        return len(now) == 2 and victim not in now and now <= serving  # the new one has a heartbeat

    wait_for(replaced, 60, f"the killed replica replaced\n{procs.logs()}")
    _run_jobs(redis_client, settings, "b", 20, procs.logs)

    assert procs.stop(parent, timeout_s=60) == 0, procs.logs()
    assert procs.stop(pre) == 0, procs.logs()
    assert not any(psutil.pid_exists(pid) for pid in children - {victim}) or all(
        psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        for pid in children - {victim}
        if psutil.pid_exists(pid)
    )
    assert "restarting in" in procs.log(parent)
    # Every replica stopped by the SIGTERM removed its heartbeat (the killed one's lapses by itself).
    assert set(_model_workers(redis_client).values()) <= {victim}
