"""The rq job of a webhook delivery: `run_delivery(delivery_id, round)` makes one attempt.

An attempt: mark the delivery `delivering` (shared/webhooks.py BEGIN), build the body from the
job as it is now, sign it, POST it (workers/webhooks/delivery.py), record the attempt and the
new state (FINISH), then tell rq what comes next:

- 2xx: `succeeded`; the rq job finishes.
- a failure with attempts left in this round (DLPIPE_WEBHOOK_RETRY_SCHEDULE_S has one delay
  per attempt): `failed`, and the function returns an rq `Retry` for the next delay, which rq
  schedules (ScheduledJobRegistry; the notifier runs rq's scheduler). A 429 or 503 with
  Retry-After waits at least that long (capped at an hour).
- the last attempt failed, or one no retry can help (410 Gone, an address the SSRF guard
  refuses, no signing secret, the job expired): `dead`, and the function raises DeliveryDead,
  so rq files the job under its failed registry too (`rq info`). 410 also stops every later
  event of that job. POST /v1/jobs/{id}/webhook/redeliver starts a new round.

The process that runs the rq workers calls `configure()` first: the Redis client, settings,
sender and signing key are shared by its worker threads.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import redis
from rq import Retry, get_current_job

from shared import keys, metrics
from shared import webhooks as state
from shared.job_record import job_view_from_redis
from shared.messages import EventType, WebhookState
from shared.redis import webhooks as webhook_scripts
from shared.settings import Settings
from workers.scripted_pipeline import ScriptedPipeline
from workers.webhooks import signing
from workers.webhooks.delivery import Outcome, Sender

log = logging.getLogger("workers.webhooks")

FUNCTION = "workers.webhooks.attempt.run_delivery"  # what rq jobs name (JSON: no pickled callables)
NO_SECRET = "not sent: DLPIPE_WEBHOOK_SECRET is not set, and webhooks are never sent unsigned"


class DeliveryDead(Exception):
    """The delivery is given up (dead-lettered): no attempt is left, or none can succeed."""


@dataclass
class Context:
    redis: redis.Redis
    settings: Settings
    sender: Sender
    key: bytes | None  # the signing key; None: no secret, nothing is sent


_context: Context | None = None


def configure(context: Context | None) -> None:
    global _context
    _context = context


def current() -> Context:
    if _context is None:
        raise RuntimeError("workers.webhooks.attempt.configure() was not called in this process")
    return _context


@dataclass(frozen=True)
class Decision:
    state: WebhookState
    delay_s: float | None = None  # before the next attempt (state failed)


def decide(outcome: Outcome, tries: int, delays: tuple[float, ...]) -> Decision:
    """What follows attempt number `tries` (1-based, in this round) of a delivery."""
    if outcome.ok:
        return Decision(WebhookState.succeeded)
    if outcome.final or tries >= len(delays):
        return Decision(WebhookState.dead)
    delay = delays[tries]
    if outcome.retry_after_s is not None:
        delay = max(delay, outcome.retry_after_s)
    return Decision(WebhookState.failed, delay)


def due_at(delay_s: float, now: float) -> float:
    """When an attempt `delay_s` from `now` is due, as rq can schedule it: rq keeps whole
    seconds (it floors), so round up; a due time is never early, at most a second late."""
    return now if delay_s <= 0 else float(math.ceil(now + delay_s))


def run_delivery(job_id: str, delivery: str, round_: int) -> Any:
    """One attempt of `delivery` (round `round_`) of an event of `job_id`; see the module's docstring."""
    ctx = current()
    ttl = ctx.settings.job_ttl_s
    # One round trip: begin, and the job as it is now; then WAIT (DLPIPE_REDIS_MIN_REPLICAS): the
    # job's state is sent only once replicas have it, or a failover could take back what was said.
    pipe = ScriptedPipeline(ctx.redis, wait=ctx.settings)
    pipe.call(
        webhook_scripts.webhook_begin(delivery=delivery, job_id=job_id, round_=round_, now=_ms(), ttl_s=ttl)
    )
    pipe.pipe.hgetall(keys.job(job_id))
    pipe.pipe.hgetall(keys.job_outputs(job_id))
    begun, job, outputs = pipe.execute()
    if begun.verdict != webhook_scripts.Begin.go:
        log.info(
            "job=%s webhook %s round %d: nothing to do (%s)", job_id, delivery, round_, begun.verdict.value
        )
        return {"skipped": begun.verdict.value}
    tries = begun.tries_before + 1  # this attempt's number in the round
    assert begun.event is not None
    event, event_at, gone = begun.event, begun.event_at if begun.event_at is not None else _ms(), begun.gone
    started, started_ms = time.monotonic(), _ms()
    replicated = pipe.replicated
    if replicated is not None and not replicated.confirmed:
        outcome = Outcome(
            ok=False, error=f"not sent: the job's state is not on the replicas yet ({replicated.describe()})"
        )
    else:
        outcome = _attempt(ctx, delivery, event, event_at, gone, job, outputs)
    took_ms = int((time.monotonic() - started) * 1000)
    decision = decide(outcome, tries, ctx.settings.webhook_delays_s)
    now = time.time()
    due = None if decision.delay_s is None else due_at(decision.delay_s, now)
    next_at = "" if due is None else str(int(due * 1000))
    record = state.Attempt(started_ms, took_ms, outcome.status_code, None if outcome.ok else outcome.error)
    gone_reason = f"HTTP 410 Gone from {delivery}" if outcome.status_code == 410 else ""
    error = "" if outcome.ok else (outcome.error or "")
    metric = metrics.webhook_field(event.short, decision.state.value, outcome.status_code)
    webhook_scripts.webhook_finish(
        delivery=delivery,
        job_id=job_id,
        round_=round_,
        state=decision.state,
        attempt_json=record.to_json(),
        status=outcome.status_code,
        error=error,
        next_at=next_at,
        ttl_s=ttl,
        now=_ms(),
        gone_reason=gone_reason,
        metric=metric,
    ).run(ctx.redis)
    what = f"job={job_id} webhook {event.value} {delivery} attempt {tries}"
    shown = f"HTTP {outcome.status_code}" if outcome.ok else outcome.error
    if decision.state == WebhookState.succeeded:
        log.info("%s delivered (%s, %d ms)", what, shown, took_ms)
        return {"status_code": outcome.status_code, "attempt": tries}
    if decision.state == WebhookState.failed:
        assert decision.delay_s is not None and due is not None
        log.warning("%s failed (%s, %d ms); next in %gs", what, shown, took_ms, decision.delay_s)
        rq_job = get_current_job()
        # rq schedules it `due - now` from now (whatever rq's own retry count is: rounds reuse none)
        return Retry(max=(rq_job.number_of_retries or 0) + 1 if rq_job else 1, interval=[due - now])
    log.error("%s failed (%s, %d ms); dead-lettered (redeliver with the API)", what, shown, took_ms)
    rq_job = get_current_job()
    if rq_job is not None:
        rq_job.retries_left = 0  # rq must not retry it (CRASH_RETRY): it goes to the failed registry
    raise DeliveryDead(f"{delivery}: {outcome.error}")


def _attempt(
    ctx: Context, delivery: str, event: EventType, event_at: int, gone: str, job: Any, outputs: Any
) -> Outcome:
    """Build, sign and send; or the reason it cannot be sent (a final outcome)."""
    if gone:
        return Outcome(ok=False, error=f"not sent: the receiver said no more ({gone})", final=True)
    if ctx.key is None:
        return Outcome(ok=False, error=NO_SECRET, final=True)
    if not job:
        return Outcome(ok=False, error="not sent: the job is gone (expired)", final=True)
    view = job_view_from_redis(job, outputs)
    if view.webhook is None:
        return Outcome(ok=False, error="not sent: the job has no webhook", final=True)
    try:
        body = signing.event_body(event, event_at, view)
    except (ValueError, RecursionError, UnicodeError) as exc:  # no retry can make it render
        return Outcome(ok=False, error=f"not sent: the job cannot be rendered as JSON ({exc})", final=True)
    headers = signing.headers(ctx.key, delivery, int(time.time()), body)
    return ctx.sender.send(view.webhook.url, headers, body)


def _ms() -> int:
    return int(time.time() * 1000)
