"""Deadlines and the backlog counter against fakeredis (with Lua): EXPIRE_JOB ends a due job
once, whoever else acts on it; the workers then skip it; RECOUNT_BACKLOG puts the counter back
to what the open jobs hold when a record vanished; the API's sweep does all that each tick;
and the 429's Retry-After follows the drain rate."""

from __future__ import annotations

from typing import Any

import fakeredis
import pytest
from starlette.exceptions import HTTPException

from services.api import admission
from services.api.drain import DEFAULT_S, MAX_S, DrainRates, retry_after_s
from services.api.sweep import Sweeper
from shared import keys, metrics
from shared.job_record import JobRecord
from shared.jobs import OPEN_JOB_GRACE_S, TTL_EXPIRED_REASON, expired_reason, queue_new_job
from shared.messages import now_ms
from shared.pipeline_spec import parse_pipelines
from shared.redis import scripts
from tests.stagefns import job_view
from workers.store import StageResult, Store

CONFIG = parse_pipelines(
    {
        "models": {},
        "pipelines": {
            "two": {
                "input": "image",
                "stages": [
                    {"name": "pre", "kind": "preprocess", "fn": "json:dumps"},
                    {"name": "post", "kind": "postprocess", "fn": "json:loads"},
                ],
            }
        },
    }
)
PIPELINE = CONFIG.pipelines["two"]
STREAMS = [PIPELINE.stream_name(stage) for stage in PIPELINE.stages]  # in stage order
TTL_S = 600


@pytest.fixture
def store(client: fakeredis.FakeRedis) -> Store:
    made = Store(client, CONFIG, ttl_s=TTL_S)
    made.ensure_groups(STREAMS, keys.CPU_GROUP)
    return made


def queue(client: Any, job_id: str, n: int, *, timeout_s: float | None = 30, age_ms: int = 0) -> None:
    """A job of n items created `age_ms` ago (so its deadline may be past already)."""
    pipe = client.pipeline()
    queue_new_job(
        pipe,
        JobRecord.new(
            id=job_id, pipeline=PIPELINE.name, total=n, created_ms=now_ms() - age_ms, timeout_s=timeout_s
        ),
        pipeline=PIPELINE,
        inputs=[{"v": i} for i in range(n)],
        ttl_s=TTL_S,
    )
    pipe.execute()


def expire(client: Any, job_id: str, now: int | None = None) -> list[int]:
    reply = client.eval(
        scripts.EXPIRE_JOB,
        6,
        keys.job(job_id),
        keys.job_outputs(job_id),
        keys.EVENTS,
        keys.backlog("two"),
        keys.deadlines("two"),
        keys.METRICS,
        now or now_ms(),
        TTL_S,
        job_id,
        expired_reason("%s"),
        TTL_EXPIRED_REASON,
    )
    return [int(x) for x in reply]


def backlog(client: Any) -> int:
    return int(client.get(keys.backlog("two")) or 0)


def completed_events(client: Any, job_id: str) -> int:
    events = [f for _, f in client.xrange(keys.EVENTS) if f[b"job"] == job_id.encode()]
    return sum(1 for f in events if f[b"type"] == b"job.completed")


def finish(store: Store, job_id: str, index: int, *, error: str | None = None) -> list[int]:
    """Run item `index` of `job_id` through both stages (or fail it at the first); returns
    COMPLETE_STAGE's replies."""
    replies = []
    for stream in STREAMS:
        entries = store.read(keys.CPU_GROUP, "c", [stream], 100, None)
        mine = [e for e in entries if (e.item.job_id, e.item.index) == (job_id, index)]
        for entry in mine:
            value = {"v": index} if entry.item.stage == "post" else b"x"
            replies += store.complete(keys.CPU_GROUP, [StageResult(entry, value=value, error=error)])
        if error is not None:
            break
    return replies


# -- EXPIRE_JOB -------------------------------------------------------------------------------


def test_a_due_job_ends_once_with_its_unfinished_outputs_expired(client: Any, store: Store) -> None:
    queue(client, "j1", 3, age_ms=60_000)  # created a minute ago with timeout_s 30: due
    assert finish(store, "j1", 0) == [1, 2]  # item 0 done in time: recorded, then finished
    assert backlog(client) == 2 and int(client.get(keys.drained("two"))) == 1
    assert expire(client, "j1") == [1, 2, 3]
    view = job_view(client, "j1")
    assert view.status.value == "succeeded" and view.error is None  # the usual rule: one succeeded
    assert view.progress.done == 3 and view.completed_at is not None
    assert [o.status.value for o in view.outputs] == ["succeeded", "failed", "failed"]
    assert {o.error for o in view.outputs[1:]} == {"expired: the job's timeout_s of 30 s passed"}
    assert backlog(client) == 0 and completed_events(client, "j1") == 1
    assert client.zscore(keys.deadlines("two"), "j1") is None
    assert 0 < client.ttl(keys.job("j1")) <= TTL_S and 0 < client.ttl(keys.job_outputs("j1")) <= TTL_S
    # Again (another sweeper, a retry): nothing more happens.
    assert expire(client, "j1") == [0, 0, 0]
    assert completed_events(client, "j1") == 1 and backlog(client) == 0
    # GET /metrics counts what the sweep ended, once (the item done in time by the worker).
    counted = metrics.parse(client.hgetall(keys.METRICS)).counters
    assert counted[metrics.ITEMS] == {("two", "succeeded"): 1, ("two", "failed"): 2}
    assert counted[metrics.JOBS] == {("two", "succeeded"): 1}


def test_a_job_not_due_is_left_alone_and_one_with_nothing_done_fails(client: Any) -> None:
    queue(client, "j2", 2, timeout_s=0.5)
    created = int(client.hget(keys.job("j2"), "created_at"))
    assert expire(client, "j2", now=created + 499) == [0, 0, 0]
    assert job_view(client, "j2").status.value == "queued" and backlog(client) == 2
    assert expire(client, "j2", now=created + 500) == [1, 2, 2]
    view = job_view(client, "j2")
    assert view.status.value == "failed" and view.error == "all 2 items failed"
    assert {o.error for o in view.outputs} == {"expired: the job's timeout_s of 0.5 s passed"}


def test_a_job_without_timeout_s_must_end_by_its_ttl(client: Any) -> None:
    queue(client, "j3", 1, timeout_s=None)
    created = int(client.hget(keys.job("j3"), "created_at"))
    assert client.zscore(keys.deadlines("two"), "j3") == created + TTL_S * 1000
    # Open, its record outlives its TTL by the grace, so the sweep finds it when it is due.
    assert TTL_S < client.ttl(keys.job("j3")) <= TTL_S + OPEN_JOB_GRACE_S
    assert expire(client, "j3", now=created + TTL_S * 1000) == [1, 1, 1]
    assert job_view(client, "j3").outputs[0].error == TTL_EXPIRED_REASON


def test_after_expiry_the_workers_skip_the_jobs_items_and_record_nothing(client: Any, store: Store) -> None:
    queue(client, "j4", 3, age_ms=60_000)
    client.hdel(keys.job("j4"), "deadline")  # workers would fail its items themselves: not here
    held = store.read(keys.CPU_GROUP, "c", STREAMS, 1, None)  # taken before the sweep
    assert expire(client, "j4")[0] == 1
    # An item in the middle of a stage: its result is dropped, its entry acknowledged.
    assert store.complete(keys.CPU_GROUP, [StageResult(e, value=b"x") for e in held]) == [0]
    assert client.xlen(keys.stream(STREAMS[1])) == 0  # nothing went on
    # The items not taken yet are acknowledged unrun, beside another job's.
    queue(client, "later", 1, timeout_s=None)
    entries = store.read(keys.CPU_GROUP, "c", STREAMS, 10, None)
    loaded = store.load(entries)
    assert [(e.item.job_id, v is not None) for e, v in zip(entries, loaded)] == [
        ("j4", False),
        ("j4", False),
        ("later", True),
    ]
    assert client.xpending(keys.stream(STREAMS[0]), keys.CPU_GROUP)["pending"] == 1  # `later`'s only
    assert completed_events(client, "j4") == 1 and backlog(client) == 1


def test_a_worker_finishing_the_last_item_first_leaves_the_sweep_nothing(client: Any, store: Store) -> None:
    queue(client, "j5", 1, age_ms=60_000)
    entries = store.read(keys.CPU_GROUP, "c", STREAMS, 10, None)
    assert store.complete(keys.CPU_GROUP, [StageResult(entries[0], error="bad input")]) == [3]
    assert client.zscore(keys.deadlines("two"), "j5") is None  # it left the set as it ended
    assert expire(client, "j5") == [0, 0, 0]
    assert completed_events(client, "j5") == 1 and backlog(client) == 0
    assert job_view(client, "j5").outputs[0].error == "bad input"


def test_cancel_takes_the_job_out_of_the_deadlines_set(client: Any) -> None:
    queue(client, "j6", 2, age_ms=60_000)
    client.eval(
        scripts.CANCEL_JOB,
        5,
        keys.job("j6"),
        keys.job_outputs("j6"),
        keys.EVENTS,
        keys.backlog("two"),
        keys.deadlines("two"),
        now_ms(),
        TTL_S,
        "j6",
    )
    assert client.zscore(keys.deadlines("two"), "j6") is None
    assert expire(client, "j6") == [0, 0, 0] and completed_events(client, "j6") == 1


# -- a record that vanished while open: the backlog recount ---------------------------------


def test_a_vanished_job_is_reported_and_the_recount_restores_the_counter(client: Any, store: Store) -> None:
    queue(client, "open1", 3, timeout_s=None)
    queue(client, "open2", 2, timeout_s=None)
    finish(store, "open2", 0)  # open2: 1 of 2 left
    queue(client, "gone", 4, age_ms=60_000)
    client.delete(keys.job("gone"))  # its record vanished (evicted, deleted) with its 4 items counted
    assert backlog(client) == 3 + 1 + 4
    assert expire(client, "gone") == [-1, 0, 0]
    assert client.zscore(keys.deadlines("two"), "gone") is None
    reply = client.eval(scripts.RECOUNT_BACKLOG, 2, keys.backlog("two"), keys.deadlines("two"), keys.job(""))
    assert [int(x) for x in reply] == [8, 4, 0]
    assert backlog(client) == 4  # exactly what open1 and open2 still hold
    # An ended job or a record gone from the set's members is dropped by the recount itself.
    client.hset(keys.job("open1"), "status", "succeeded")
    client.delete(keys.job("open2"))
    reply = client.eval(scripts.RECOUNT_BACKLOG, 2, keys.backlog("two"), keys.deadlines("two"), keys.job(""))
    assert [int(x) for x in reply] == [4, 0, 2] and client.zcard(keys.deadlines("two")) == 0


# -- the sweep --------------------------------------------------------------------------------


def sweeper(server: fakeredis.FakeServer, rates: DrainRates | None = None, clock: Any = None) -> Sweeper:
    client = fakeredis.FakeAsyncRedis(server=server)
    extra = {"clock": clock} if clock else {}
    return Sweeper(client, ["two"], ttl_s=TTL_S, interval_s=1.0, rates=rates or DrainRates(), **extra)


@pytest.mark.anyio
async def test_the_sweep_ends_overdue_jobs_frees_their_inputs_and_recounts(
    client: Any, fake_server: fakeredis.FakeServer
) -> None:
    queue(client, "due1", 2, age_ms=60_000)
    queue(client, "due2", 1, age_ms=31_000)
    queue(client, "later", 1, timeout_s=300)
    queue(client, "gone", 5, age_ms=60_000)
    client.delete(keys.job("gone"))
    first, second = sweeper(fake_server), sweeper(fake_server)  # two API processes
    assert await first.sweep_once() == 2
    assert await second.sweep_once() == 0
    for job_id in ("due1", "due2"):
        assert job_view(client, job_id).status.value == "failed"
        assert completed_events(client, job_id) == 1
        assert not client.exists(keys.item(job_id, 0))  # inputs that will never run are freed
    assert job_view(client, "later").status.value == "queued" and client.exists(keys.item("later", 0))
    assert backlog(client) == 1  # only `later` counts: the vanished job's 5 items were recounted away
    assert [m.decode() for m in client.zrange(keys.deadlines("two"), 0, -1)] == ["later"]
    await first.client.aclose()
    await second.client.aclose()


@pytest.mark.anyio
async def test_the_sweep_samples_the_drain_rate(client: Any, fake_server: fakeredis.FakeServer) -> None:
    now = [100.0]
    rates = DrainRates()
    sweep = sweeper(fake_server, rates, clock=lambda: now[0])
    await sweep.sweep_once()
    assert rates.rate("two") is None  # one sample: unknown
    client.incrby(keys.drained("two"), 40)
    now[0] += 4.0
    await sweep.sweep_once()
    assert rates.rate("two") == pytest.approx(10.0)
    await sweep.client.aclose()


# -- Retry-After ------------------------------------------------------------------------------


def test_drain_rates_over_a_window() -> None:
    rates = DrainRates(window_s=10)
    for t in range(0, 31):  # 5 items/s for 20 s, then 1 item/s
        rates.observe("p", float(t), 5 * min(t, 20) + max(0, t - 20))
    assert rates.rate("p") == pytest.approx(1.0, abs=0.15)  # the last ~10 s only
    rates.observe("p", 31.0, 3)  # the counter went back (Redis lost it): start over
    assert rates.rate("p") is None


@pytest.mark.parametrize(
    ("backlog_", "cap", "rate", "expected"),
    [
        (100, 100, None, DEFAULT_S),  # not measured yet
        (100, 100, 0.0, MAX_S),  # nothing drains
        (100, 100, 10.0, 1),  # one item to go: at least 1 s
        (149, 100, 10.0, 5),  # 50 items at 10/s
        (10_000, 100, 2.0, MAX_S),  # long: capped
    ],
)
def test_retry_after_is_the_time_to_drain_to_the_cap(
    backlog_: int, cap: int, rate: float | None, expected: int
) -> None:
    assert retry_after_s(backlog_, cap, rate) == expected


@pytest.mark.anyio
async def test_a_429_says_when_to_retry_from_the_drain_rate(
    fake_server: fakeredis.FakeServer, client: Any
) -> None:
    client.set(keys.backlog("two"), 130)
    async_client = fakeredis.FakeAsyncRedis(server=fake_server)
    with pytest.raises(HTTPException) as refused:
        await admission.admit(async_client, "two", 1, 100, drain_per_s=4.0)
    assert refused.value.status_code == 429
    assert refused.value.headers == {"Retry-After": "8"}  # (130 - 100 + 1) / 4 -> 8 s
    assert refused.value.detail.endswith("retry after 8 s")
    await async_client.aclose()
