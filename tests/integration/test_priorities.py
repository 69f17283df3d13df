"""Job priorities on a real redis-server with real workers: a high job overtakes a low backlog at
every stage, low still progresses under a high flood, and reclaim and trimming cover the priority
streams. Steps are driven by hand (run_once) where order is the point, and the real loops run in
threads for the whole stack; waiting is polling a condition against a deadline."""

from __future__ import annotations

from pathlib import Path

import redis

from shared import keys
from shared.messages import JobStatus
from shared.priority import Priority
from tests.stagefns import job_view, pipelines, queue_job
from tests.support.waiting import wait_for
from tests.support.workers import is_final, make_settings, pending, running, thread_workers

STAGES = ["cpu.sums.prep", "model.summer", "cpu.sums.post"]


def done(client: redis.Redis, job_id: str) -> int:
    return int(client.hget(keys.job(job_id), "done") or 0)


def step(cpu, model) -> int:  # type: ignore[no-untyped-def]
    return cpu.run_once(block_ms=1) + model.run_once(block_ms=1)


def stepped_by_hand(client: redis.Redis, redis_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    """The `sums` workers (batches of up to 4, no delay), recovered, to step by hand: the
    pipeline, the cpu worker, the model worker."""
    settings = make_settings(redis_url, tmp_path, pipelines(max_batch_size=4, max_batch_delay_ms=0))
    store, cpu, model = thread_workers(client, settings)
    cpu.recover()
    model.recover()
    return store.config.pipelines["sums"], cpu, model


def test_a_high_job_overtakes_a_low_backlog_at_every_stage(
    redis_client: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    sums, cpu, model = stepped_by_hand(redis_client, redis_url, tmp_path)
    queue_job(redis_client, sums, "low", [{"v": i} for i in range(60)], priority=Priority.low)
    for _ in range(3):  # the low backlog is being worked: some of it is in every stage
        step(cpu, model)
    queue_job(redis_client, sums, "high", [{"v": 100 + i} for i in range(3)], priority=Priority.high)
    steps = 0
    while not is_final(redis_client, "high"):
        step(cpu, model)
        steps += 1
        assert steps <= 6, "the high job should not wait behind the low backlog"  # FIFO: > 20
    assert done(redis_client, "low") < 20  # most of the low backlog still waits
    high = job_view(redis_client, "high")
    assert high.status == JobStatus.succeeded and high.priority == Priority.high
    assert [o.result["sum"] for o in high.outputs] == [2.0 * (100 + i) for i in range(3)]
    # It kept its priority at every stage (the scripts queue the next stage on its stream).
    for stage in STAGES:
        assert redis_client.xlen(keys.stream(f"{stage}:high")) == 3, stage
    while not is_final(redis_client, "low"):
        assert step(cpu, model), "the low job stalled"
    low = job_view(redis_client, "low")
    assert low.status == JobStatus.succeeded and low.priority == Priority.low
    assert redis_client.xlen(keys.stream("model.summer")) == 0  # nothing went the normal way


def test_low_still_progresses_under_a_high_flood(
    redis_client: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    sums, cpu, model = stepped_by_hand(redis_client, redis_url, tmp_path)
    queue_job(redis_client, sums, "flood", [{"v": i} for i in range(150)], priority=Priority.high)
    queue_job(redis_client, sums, "low", [{"v": i} for i in range(4)], priority=Priority.low)
    while not is_final(redis_client, "low"):
        assert step(cpu, model), "stalled"
    # The low job ended while the flood still ran: its guaranteed share (1 slot in 12 of every
    # stage's batches while high waits), not what was left after the flood.
    assert done(redis_client, "flood") < 40  # first in first out: about all 150
    assert job_view(redis_client, "low").status == JobStatus.succeeded


def test_the_loops_run_a_high_job_before_a_low_backlog(
    redis_client: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    settings = make_settings(redis_url, tmp_path, pipelines())
    store, cpu, model = thread_workers(redis_client, settings)
    sums = store.config.pipelines["sums"]
    queue_job(redis_client, sums, "low", [{"v": i} for i in range(400)], priority=Priority.low)
    queue_job(redis_client, sums, "high", [{"v": 1}, {"v": 2}], priority=Priority.high)
    with running(cpu, model):
        wait_for(lambda: is_final(redis_client, "high"), 30, "the high job to finish")
        low_done = done(redis_client, "low")
        wait_for(lambda: is_final(redis_client, "low"), 60, "the low job to finish")
    assert low_done < 400  # the high job did not wait for the backlog queued before it
    assert job_view(redis_client, "high").status == JobStatus.succeeded
    assert job_view(redis_client, "low").status == JobStatus.succeeded


def test_reclaim_and_trimming_cover_the_priority_streams(
    redis_client: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    settings = make_settings(redis_url, tmp_path, pipelines()).model_copy(
        update={"lease_ms": 100, "stream_trim_interval_s": 0.05}
    )
    store, cpu, model = thread_workers(redis_client, settings)
    cpu.setup()
    model.setup()
    sums = store.config.pipelines["sums"]
    queue_job(redis_client, sums, "h", [{"v": i} for i in range(3)], priority=Priority.high)
    queue_job(redis_client, sums, "l", [{"v": i} for i in range(3)], priority=Priority.low)
    for stream in ("cpu.sums.prep:high", "cpu.sums.prep:low"):  # a worker that died holding them
        redis_client.xreadgroup(keys.CPU_GROUP, "dead", {keys.stream(stream): ">"})
        assert pending(redis_client, stream, keys.CPU_GROUP) == 3
    wait_for(
        lambda: step(cpu, model) >= 0 and is_final(redis_client, "h") and is_final(redis_client, "l"),
        30,
        "both jobs to finish, their entries taken back from the dead worker",
    )
    for job_id in ("h", "l"):
        view = job_view(redis_client, job_id)
        assert view.status == JobStatus.succeeded, view
        assert [o.result["sum"] for o in view.outputs] == [0.0, 2.0, 4.0]
    for stage in STAGES:
        for name in keys.stage_streams(stage):
            group = keys.stream_group(keys.stream(name))
            assert pending(redis_client, name, group) == 0, name
    # Trimming: every priority's stream loses what every group is done with.
    wait_for(
        lambda: (
            (cpu.reclaimer.trim(), model.reclaimer.trim())
            and all(
                redis_client.xlen(keys.stream(name)) <= 1 for s in STAGES for name in keys.stage_streams(s)
            )
        ),
        10,
        "the priority streams to be trimmed",
    )
