"""Webhook deliveries on fakeredis: events emitted by the workers' scripts, the delivery state
machine, and attempts made in-process through a mock transport (no traffic at all: the SSRF
guard is fed by a fake resolver)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import pytest
import torch
from rq import Retry
from standardwebhooks.webhooks import Webhook

from shared import keys
from shared import webhooks as state
from shared.job_record import job_view_from_redis
from shared.messages import EventType, WebhookState, WebhookView, now_ms
from shared.netguard import AddressPolicy
from shared.pipeline_spec import parse_pipelines
from shared.redis import scripts
from shared.settings import Settings
from tests.stagefns import pipelines, queue_job
from tests.support.webhooks import HOOK, SECRET, SETTINGS, begin, finished_job, make_notifier, redeliver
from workers.inference import load_models
from workers.model_worker import ModelWorker
from workers.preprocess import PreprocessWorker
from workers.store import Store
from workers.webhooks import attempt
from workers.webhooks.delivery import Sender


def events(client: Any) -> list[tuple[str, str]]:
    return [(f[b"job"].decode(), f[b"type"].decode()) for _, f in client.xrange(keys.EVENTS)]


def run_jobs(client: Any) -> Store:
    store = Store(client, parse_pipelines(pipelines()), ttl_s=3600)
    cpu = PreprocessWorker(store, SETTINGS, "cpu-1")
    model = ModelWorker(store, SETTINGS, "gpu-1", load_models(store.config, ["summer"], torch.device("cpu")))
    cpu.recover()
    model.recover()
    while cpu.run_once() + model.run_once():
        pass
    return store


# -- events from the workers' scripts ------------------------------------------------------


def test_the_scripts_name_the_event_types_the_notifier_reads(client: Any) -> None:
    """START_JOB and COMPLETE_STAGE (job.started when a job ends never started, job.progress) emit
    the EventType values the notifier reads."""
    sums = parse_pipelines(pipelines()).pipelines["sums"]
    wants = ["started", "progress", "completed"]
    queue_job(client, sums, "s", [{"v": 1}, {"v": 2}], webhook=HOOK, webhook_events=wants)
    queue_job(client, sums, "n", [{"v": 1}], webhook=HOOK, webhook_events=wants)
    assert client.eval(scripts.START_JOB, 2, keys.job("s"), keys.EVENTS, 9_000, "s") == 1
    assert complete_item(client, "s", 0, 10_000) == 2
    assert complete_item(client, "n", 0, 10_000) == 3  # never started: COMPLETE_STAGE's job.started
    types = [(f[b"job"].decode(), f[b"type"].decode()) for _, f in client.xrange(keys.EVENTS)]
    assert types == [
        ("s", EventType.started.value),
        ("s", EventType.progress.value),
        ("n", EventType.started.value),
        ("n", EventType.completed.value),
    ]


def test_started_and_progress_are_emitted_only_for_jobs_that_ask(client: Any) -> None:
    config = parse_pipelines(pipelines())
    sums = config.pipelines["sums"]
    queue_job(
        client,
        sums,
        "all",
        [{"v": 1}, {"v": 2}, {"v": 3}],
        webhook=HOOK,
        webhook_events=["started", "progress", "completed"],
    )
    queue_job(client, sums, "default", [{"v": 1}, {"v": 2}], webhook=HOOK)
    queue_job(client, sums, "nohook", [{"v": 1}, {"v": 2}])
    run_jobs(client)
    emitted = events(client)
    assert [t for j, t in emitted if j == "all"] == ["job.started", "job.progress", "job.completed"]
    assert [t for j, t in emitted if j == "default"] == ["job.completed"]
    assert [t for j, t in emitted if j == "nohook"] == ["job.completed"]
    assert client.hget(keys.job("all"), "webhook_events") == b"started,progress,completed"


def complete_item(client: Any, job_id: str, index: int, at_ms: int) -> int:
    """COMPLETE_STAGE for a final result of one item, at a given time."""
    output = json.dumps({"index": index, "status": "succeeded", "result": {}})
    return client.eval(
        scripts.COMPLETE_STAGE,
        5,
        keys.item(job_id, index),
        keys.job(job_id),
        keys.job_outputs(job_id),
        keys.stream("x"),
        keys.EVENTS,
        "cpu",
        "0-1",
        index,
        at_ms,
        3600,
        "out:post",
        "",
        output,
        "0",
        job_id,
        "sums",
        "job.completed",
        0,
    )


def test_progress_events_come_at_most_once_a_second_per_job(client: Any) -> None:
    sums = parse_pipelines(pipelines()).pipelines["sums"]
    queue_job(client, sums, "p", [{"v": i} for i in range(5)], webhook=HOOK, webhook_events=["progress"])
    queue_job(client, sums, "q", [{"v": i} for i in range(3)], webhook=HOOK, webhook_events=["progress"])
    at = {0: 10_000, 1: 10_400, 2: 10_999, 3: 11_000}  # item -> when it finishes
    assert [complete_item(client, "p", i, t) for i, t in at.items()] == [2, 2, 2, 2]
    assert complete_item(client, "q", 0, 10_500) == 2  # another job: its own clock
    assert complete_item(client, "p", 4, 11_200) == 3  # the last item: job.completed instead
    got = [(f[b"job"], f[b"type"], int(f[b"at"])) for _, f in client.xrange(keys.EVENTS)]
    assert got == [
        (b"p", b"job.progress", 10_000),
        (b"p", b"job.progress", 11_000),
        (b"q", b"job.progress", 10_500),
        (b"p", b"job.completed", 11_200),
    ]
    # job.started was not asked for, even though the job never went through START_JOB
    assert client.hget(keys.job("p"), "started_at") == b"11200"


# -- the notifier's events consumer ---------------------------------------------------------


def test_events_nobody_asked_for_are_not_delivered(client: Any) -> None:
    sums = parse_pipelines(pipelines()).pipelines["sums"]
    queue_job(client, sums, "only-started", [{"v": 1}], webhook=HOOK, webhook_events=["started"])
    for kind in ("job.started", "job.progress", "job.completed"):
        client.xadd(keys.EVENTS, {"job": "only-started", "type": kind})
    client.xadd(keys.EVENTS, {"job": "expired-job", "type": "job.completed"})
    notifier, queued = make_notifier(client)
    assert notifier.run_once() == 4
    [(job, delivery, _, _)] = queued
    assert job == "only-started" and client.hget(keys.webhook(delivery), "event") == b"job.started"
    assert client.xpending(keys.EVENTS, keys.NOTIFIER_GROUP)["pending"] == 0


# -- the state machine -------------------------------------------------------------------


def test_an_attempt_cut_short_is_recorded_and_rounds_do_not_mix(client: Any) -> None:
    delivery = finished_job(client)
    assert begin(client, delivery, 1)[:2] == ["go", "0"]
    # The notifier dies mid-attempt; rq runs the job again: the lost attempt is on the record.
    assert begin(client, delivery, 1)[:2] == ["go", "1"]
    [lost] = client.lrange(keys.webhook_attempts(delivery), 0, -1)
    assert "interrupted" in json.loads(lost)["error"] and json.loads(lost)["duration_ms"] is None
    assert state.Attempt.from_json(lost).duration_ms is None
    assert redeliver(client, delivery)[0] == "0"  # in flight: refused
    assert begin(client, delivery, 2) == ["stale"]  # a round that was never started
    assert begin(client, "msg_nope_1-0", 1) == ["gone"]


# -- attempts, in-process ---------------------------------------------------------------


class FakeResolver:
    def __init__(self, answers: Sequence[Sequence[str]]) -> None:
        self.answers = list(answers)
        self.asked: list[str] = []

    def __call__(self, host: str, port: int) -> Sequence[str]:
        self.asked.append(host)
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


class Receiver:
    """A mock transport answering from a list; records every request it gets."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, tuple):
            return httpx.Response(answer[0], headers=answer[1])
        return httpx.Response(answer)


@pytest.fixture
def deliveries(client: Any) -> Iterator[Any]:
    """Configure attempts on fakeredis; yields a function (receiver, resolver, settings) -> None."""

    def configure(receiver: Receiver, resolver: Any = None, settings: Settings = SETTINGS) -> None:
        sender = Sender(
            2.0,
            AddressPolicy(
                allow_private=settings.webhook_allow_private, override="DLPIPE_WEBHOOK_ALLOW_PRIVATE"
            ),
            resolver or FakeResolver([["93.184.216.34"]]),
            transport=httpx.MockTransport(receiver),
        )
        key = None if settings.webhook_secret is None else attempt.signing.secret_key(SECRET)
        attempt.configure(attempt.Context(client, settings, sender, key))

    yield configure
    attempt.configure(None)


def delivery_state(client: Any, delivery: str) -> dict[str, str]:
    return state.decode(client.hgetall(keys.webhook(delivery)))


def test_failures_are_retried_on_schedule_then_dead_lettered_then_redelivered(
    client: Any, deliveries: Any
) -> None:
    delivery = finished_job(client)
    receiver = Receiver(500, httpx.ConnectError("refused"), 503, 204)
    deliveries(receiver)
    first = attempt.run_delivery("j1", delivery, 1)
    assert isinstance(first, Retry) and 1.0 <= first.intervals[0] <= 2.0  # schedule 0,1,1
    assert delivery_state(client, delivery)["state"] == "failed"
    assert int(delivery_state(client, delivery)["next_attempt_at"]) >= now_ms() + 500
    assert isinstance(attempt.run_delivery("j1", delivery, 1), Retry)
    with pytest.raises(attempt.DeliveryDead):
        attempt.run_delivery("j1", delivery, 1)
    dead = delivery_state(client, delivery)
    assert (dead["state"], dead["attempts"], dead["last_status"]) == ("dead", "3", "503")
    assert dead["next_attempt_at"] == ""
    assert len(receiver.requests) == 3
    # The view the API shows
    job = client.hgetall(keys.job("j1"))
    base = job_view_from_redis(job, {}).webhook
    assert isinstance(base, WebhookView)
    attempts = client.lrange(keys.webhook_attempts(delivery), 0, -1)
    shown = state.with_delivery(base, client.hgetall(keys.webhook(delivery)), attempts)
    assert shown.state == WebhookState.dead and shown.id == delivery and shown.event == EventType.completed
    assert [a.status_code for a in shown.attempts] == [500, None, 503]
    assert "cannot connect" in (shown.attempts[1].error or "") and shown.last_status_code == 503
    # Redelivery: a new round with a fresh schedule and the same webhook-id
    assert redeliver(client, delivery) == ["1", "2"]
    assert client.xrange(keys.EVENTS)[-1][1][b"type"] == b"webhook.redeliver"
    assert attempt.run_delivery("j1", delivery, 2) == {"status_code": 204, "attempt": 1}
    done = delivery_state(client, delivery)
    assert (done["state"], done["attempts"], done["round"]) == ("succeeded", "4", "2")
    assert attempt.run_delivery("j1", delivery, 2) == {"skipped": "done"}  # a duplicate rq job
    assert {r.headers["webhook-id"] for r in receiver.requests} == {delivery}
    Webhook(SECRET).verify(receiver.requests[-1].content, dict(receiver.requests[-1].headers))


def test_410_gone_dead_letters_at_once_and_stops_the_jobs_later_events(client: Any, deliveries: Any) -> None:
    delivery = finished_job(client, wanted=["progress", "completed"])
    receiver = Receiver(410)
    deliveries(receiver)
    with pytest.raises(attempt.DeliveryDead):
        attempt.run_delivery("j1", delivery, 1)
    assert delivery_state(client, delivery)["attempts"] == "1"
    assert b"410" in client.hget(keys.job_webhook("j1"), "gone")
    client.xadd(keys.EVENTS, {"job": "j1", "type": "job.progress"})
    notifier, queued = make_notifier(client)
    notifier.run_once()
    assert queued == []  # nothing more for this job
    assert redeliver(client, delivery)[0] == "1"  # an explicit redelivery lifts it
    assert client.hget(keys.job_webhook("j1"), "gone") is None


def test_without_a_secret_nothing_is_sent(client: Any, deliveries: Any) -> None:
    delivery = finished_job(client)
    receiver = Receiver(204)
    deliveries(receiver, settings=Settings(redis_url="redis://unused", webhook_retry_schedule_s="0,1,1"))
    with pytest.raises(attempt.DeliveryDead):
        attempt.run_delivery("j1", delivery, 1)
    assert receiver.requests == []
    assert "DLPIPE_WEBHOOK_SECRET is not set" in delivery_state(client, delivery)["last_error"]


def test_a_job_that_cannot_be_rendered_is_dead_lettered_with_that_reason(
    client: Any, deliveries: Any
) -> None:
    delivery = finished_job(client)
    # A stage's result JSON cannot send (a lone surrogate), as stored by an older version.
    output = {"index": 0, "status": "succeeded", "result": {"label": "\ud800"}}
    client.hset(keys.job_outputs("j1"), "0", json.dumps(output))
    receiver = Receiver(204)
    deliveries(receiver)
    with pytest.raises(attempt.DeliveryDead):
        attempt.run_delivery("j1", delivery, 1)
    assert receiver.requests == []
    shown = delivery_state(client, delivery)
    assert shown["state"] == "dead" and shown["attempts"] == "1"
    assert "cannot be rendered as JSON" in shown["last_error"] and "surrogates" in shown["last_error"]


def test_the_request_goes_to_the_checked_address_with_the_name_in_host_and_sni(
    client: Any, deliveries: Any
) -> None:
    delivery = finished_job(client, url="https://hooks.example.com:8443/in?k=1")
    receiver = Receiver(200)
    resolver = FakeResolver([["93.184.216.34"]])
    deliveries(receiver, resolver)
    attempt.run_delivery("j1", delivery, 1)
    [request] = receiver.requests
    assert str(request.url) == "https://93.184.216.34:8443/in?k=1"
    assert request.headers["host"] == "hooks.example.com:8443"
    assert request.extensions["sni_hostname"] == "hooks.example.com"
    assert resolver.asked == ["hooks.example.com"]


@pytest.mark.parametrize(
    "answers",
    [
        [["10.1.2.3"]],  # private
        [["169.254.169.254"]],  # cloud metadata
        [["100.64.0.1"]],  # carrier-grade NAT
        [["93.184.216.34", "127.0.0.1"]],  # one bad address spoils the name
        [["::ffff:93.184.216.34"]],  # IPv4-mapped
    ],
)
def test_names_that_resolve_to_internal_addresses_are_refused_without_a_request(
    client: Any, deliveries: Any, answers: list[list[str]]
) -> None:
    delivery = finished_job(client)
    receiver = Receiver(204)
    deliveries(receiver, FakeResolver(answers))
    with pytest.raises(attempt.DeliveryDead):  # refused: no retry can help
        attempt.run_delivery("j1", delivery, 1)
    assert receiver.requests == []
    assert "refused" in delivery_state(client, delivery)["last_error"]
    assert "DLPIPE_WEBHOOK_ALLOW_PRIVATE" in delivery_state(client, delivery)["last_error"]


def test_every_attempt_checks_again_so_a_changed_dns_answer_cannot_slip_through(
    client: Any, deliveries: Any
) -> None:
    delivery = finished_job(client)
    receiver = Receiver(500)
    resolver = FakeResolver([["93.184.216.34"], ["127.0.0.1"]])  # rebinding after the first attempt
    deliveries(receiver, resolver)
    assert isinstance(attempt.run_delivery("j1", delivery, 1), Retry)
    with pytest.raises(attempt.DeliveryDead):
        attempt.run_delivery("j1", delivery, 1)
    assert len(receiver.requests) == 1 and receiver.requests[0].url.host == "93.184.216.34"
    assert "loopback" in delivery_state(client, delivery)["last_error"]


def test_a_name_that_does_not_resolve_is_retried(client: Any, deliveries: Any) -> None:
    delivery = finished_job(client)

    def no_dns(host: str, port: int) -> Sequence[str]:
        raise OSError(-2, "Name or service not known")

    deliveries(Receiver(204), no_dns)
    assert isinstance(attempt.run_delivery("j1", delivery, 1), Retry)
    assert "cannot resolve" in delivery_state(client, delivery)["last_error"]
