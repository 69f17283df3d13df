"""Webhook deliveries in Redis: their state machine, shared by the notifier and the API.

A delivery is one event (job.started, job.progress, job.completed) of one job whose webhook
wants it. The notifier creates it when it takes the event from the events stream; its id is
the `webhook-id` header of every attempt, so a receiver can drop duplicates. Keys
(shared/keys.py), all expiring with the job's TTL:

- `webhook(id)`: hash: id, job, event, event_at, round, state, attempts (count, every round),
  tries (attempts in this round), last_status, last_error, last_attempt_at, next_attempt_at,
  started_at (of the attempt in flight);
- `webhook_attempts(id)`: list of JSON attempts, oldest first (the last MAX_ATTEMPTS_KEPT);
- `job_webhook(job)`: hash: `latest` and `completed` (delivery ids), `gone` (why no event of
  this job is sent any more: its receiver answered 410 Gone);
- `webhook_redelivered(job)`: string, for DLPIPE_WEBHOOK_REDELIVER_INTERVAL_S after a redelivery
  of the job's webhook: while it lives, another is refused (429).

States: pending -> delivering -> succeeded | failed (a retry is due) -> delivering ... | dead.
Each rq job runs one round of attempts of one delivery; a redelivery (the API) starts the next
round: `round` + 1, state pending, and a `webhook.redeliver` entry on the events stream for the
notifier to enqueue it. Every state change is one Lua script, so the API and the notifier
never overwrite each other (shared/redis/lua/webhook_*.lua; called through shared/redis/webhooks.py).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared.messages import EventType, WebhookAttempt, WebhookState, WebhookView, ms_to_datetime

REDELIVER_EVENT = "webhook.redeliver"  # events-stream entry type: send a delivery again
MAX_ATTEMPTS_KEPT = 100
IN_FLIGHT = frozenset({WebhookState.pending, WebhookState.delivering, WebhookState.failed})


def delivery_id(job_id: str, event_entry_id: str) -> str:
    """The delivery (and `webhook-id`) of one event: the job and the event's stream entry id."""
    return f"msg_{job_id}_{event_entry_id}"


def rq_job_id(delivery: str, round_: int) -> str:
    """The rq job running one round of a delivery (rq ids: letters, digits, `_` and `-`)."""
    return f"{delivery}_r{round_}"


# What an attempt cut short by the death of its notifier shows (its `error`; no answer, no duration).
INTERRUPTED = "interrupted: the notifier died during this attempt"


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def decode(fields: Mapping[Any, Any]) -> dict[str, str]:
    return {text(k): text(v) for k, v in fields.items()}


@dataclass(frozen=True)
class Attempt:
    """One attempt, as stored: when it started, the answer or the error, how long it took."""

    at_ms: int
    duration_ms: int | None  # None: unknown (an attempt cut short)
    status_code: int | None = None
    error: str | None = None

    def to_json(self) -> str:
        return json.dumps(
            {
                "at": self.at_ms,
                "status_code": self.status_code,
                "duration_ms": self.duration_ms,
                "error": self.error,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Attempt:
        data = json.loads(text)
        return cls(
            at_ms=int(data["at"]),
            duration_ms=None if data.get("duration_ms") is None else int(data["duration_ms"]),
            status_code=data.get("status_code"),
            error=data.get("error"),
        )


def shown_delivery(index: Mapping[Any, Any]) -> str | None:
    """The delivery `GET /v1/jobs/{id}` shows and `redeliver` sends: job.completed's, else the latest."""
    f = decode(index)
    return f.get("completed") or f.get("latest") or None


def with_delivery(view: WebhookView, delivery: Mapping[Any, Any], attempts: list[Any]) -> WebhookView:
    """The job's webhook view with the state of one delivery (as HGETALL/LRANGE return them)."""
    d = decode(delivery)
    if not d:
        return view
    tries = [Attempt.from_json(a) for a in attempts]
    return view.model_copy(
        update={
            "event": EventType(d["event"]),
            "id": d.get("id"),
            "state": WebhookState(d["state"]),
            "attempts": [
                WebhookAttempt(
                    at=ms_to_datetime(t.at_ms),
                    status_code=t.status_code,
                    error=t.error,
                    duration_ms=t.duration_ms,
                )
                for t in tries
            ],
            "last_status_code": int(d["last_status"]) if d.get("last_status") else None,
            "last_error": d.get("last_error") or None,
            "next_attempt_at": ms_to_datetime(d.get("next_attempt_at") or None),
        }
    )
