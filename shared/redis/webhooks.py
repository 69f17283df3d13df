"""The scripts of webhook deliveries (the state machine: shared/webhooks.py): WEBHOOK_CREATE
(the notifier), WEBHOOK_BEGIN and WEBHOOK_FINISH (an attempt), WEBHOOK_INTERRUPT (a dead
notifier's attempt), WEBHOOK_REDELIVER (the API). One typed function each
(shared/redis/scripts.py); what each does: shared/redis/lua/<name>.lua."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from shared import codecs, keys
from shared.messages import EventType, WebhookState
from shared.redis import scripts
from shared.redis.scripts import ScriptCall


def _delivery_keys(delivery: str, job_id: str) -> list[str]:
    return [keys.webhook(delivery), keys.webhook_attempts(delivery), keys.job_webhook(job_id)]


@dataclass(frozen=True)
class Created:
    created: bool  # False: it existed (an event handled twice)
    round: int


def webhook_create(
    *, delivery: str, job_id: str, event: EventType, event_at: int, now: int, ttl_s: int, due_ms: int
) -> ScriptCall[Created]:
    """Create the delivery of an event (its first attempt due at `due_ms`), unless it exists."""
    completed = "1" if event.short == "completed" else "0"
    return ScriptCall(
        scripts.WEBHOOK_CREATE,
        [keys.webhook(delivery), keys.job_webhook(job_id)],
        [delivery, job_id, event.value, event_at, now, ttl_s, due_ms, completed],
        lambda reply: Created(bool(int(reply[0])), int(reply[1])),
    )


class Begin(str, Enum):
    go = "go"
    gone = "gone"  # no such delivery
    stale = "stale"  # another round now
    done = "done"  # succeeded or dead already


@dataclass(frozen=True)
class Begun:
    verdict: Begin
    tries_before: int = 0  # the attempts before this one, in this round
    job_id: str = ""
    event: EventType | None = None
    event_at: int | None = None  # ms; None: not recorded
    gone: str = ""  # why the receiver wants no more ('' it does)


def _begun(reply: Any) -> Begun:
    values = [codecs.text(v) for v in reply]
    verdict = Begin(values[0])
    if verdict != Begin.go:
        return Begun(verdict)
    event_at = int(values[4]) if values[4] else None
    return Begun(verdict, int(values[1]), values[2], EventType(values[3]), event_at, values[5])


def webhook_begin(*, delivery: str, job_id: str, round_: int, now: int, ttl_s: int) -> ScriptCall[Begun]:
    """An attempt of round `round_` starts (an attempt found in flight is recorded as cut short)."""
    return ScriptCall(scripts.WEBHOOK_BEGIN, _delivery_keys(delivery, job_id), [round_, now, ttl_s], _begun)


def webhook_finish(
    *,
    delivery: str,
    job_id: str,
    round_: int,
    state: WebhookState,
    attempt_json: str,
    status: int | None,
    error: str,
    next_at: str,
    ttl_s: int,
    now: int,
    gone_reason: str,
    metric: str,
) -> ScriptCall[bool]:
    """An attempt ended: the delivery is now `state`, the attempt recorded, `metric` (a field of
    keys.METRICS) counted; False if the round is stale (nothing written)."""
    args = [
        round_,
        state.value,
        attempt_json,
        "" if status is None else status,
        error,
        next_at,
        ttl_s,
        now,
        gone_reason,
        metric,
    ]
    keys_ = [*_delivery_keys(delivery, job_id), keys.job(job_id), keys.job_outputs(job_id), keys.METRICS]
    return ScriptCall(scripts.WEBHOOK_FINISH, keys_, args, lambda reply: bool(int(reply)))


def webhook_interrupt(*, delivery: str, round_: int, now: int, ttl_s: int, give_up: bool) -> ScriptCall[bool]:
    """The notifier running round `round_` died: the attempt in flight (if any, True) recorded
    as interrupted, the delivery `pending` again, or `dead` with `give_up`."""
    return ScriptCall(
        scripts.WEBHOOK_INTERRUPT,
        [keys.webhook(delivery), keys.webhook_attempts(delivery)],
        [round_, now, ttl_s, "1" if give_up else "0"],
        lambda reply: bool(int(reply)),
    )


class Redelivery(str, Enum):
    made = "made"
    in_flight = "in_flight"
    gone = "gone"  # no such delivery (expired)
    too_soon = "too_soon"  # after the job's last redelivery


@dataclass(frozen=True)
class Redelivered:
    outcome: Redelivery
    round: int = 0  # made: the new round
    state: str = ""  # in flight: the delivery's state
    wait_ms: int = 0  # too soon: ms left


def _redelivered(reply: Any) -> Redelivered:
    code = int(reply[0])
    if code == 1:
        return Redelivered(Redelivery.made, round=int(reply[1]))
    if code == 0:
        return Redelivered(Redelivery.in_flight, state=codecs.text(reply[1]))
    if code == -2:
        return Redelivered(Redelivery.too_soon, wait_ms=int(reply[1]))
    return Redelivered(Redelivery.gone)


def webhook_redeliver(
    *, delivery: str, job_id: str, now: int, ttl_s: int, interval_ms: int
) -> ScriptCall[Redelivered]:
    """Send the delivery again, unless it is in flight or the job's last redelivery was less
    than `interval_ms` ago (0: no limit)."""
    return ScriptCall(
        scripts.WEBHOOK_REDELIVER,
        [keys.webhook(delivery), keys.job_webhook(job_id), keys.EVENTS, keys.webhook_redelivered(job_id)],
        [now, ttl_s, job_id, delivery, interval_ms],
        _redelivered,
    )
