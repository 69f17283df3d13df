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
never overwrite each other.
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


# KEYS: 1 delivery, 2 job's webhook index. ARGV: 1 id, 2 job id, 3 event type, 4 event at (ms),
# 5 now (ms), 6 ttl s, 7 next attempt at (ms), 8 '1' for job.completed.
# Returns {1, round} when created, {0, round} when it existed (an event handled twice).
CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {0, tonumber(redis.call('HGET', KEYS[1], 'round'))}
end
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'job', ARGV[2], 'event', ARGV[3], 'event_at', ARGV[4],
           'created_at', ARGV[5], 'round', 1, 'state', 'pending', 'attempts', 0, 'tries', 0,
           'next_attempt_at', ARGV[7])
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('HSET', KEYS[2], 'latest', ARGV[1])
if ARGV[8] == '1' then redis.call('HSET', KEYS[2], 'completed', ARGV[1]) end
redis.call('EXPIRE', KEYS[2], ARGV[6])
return {1, 1}
"""

# What an attempt cut short by the death of its notifier shows (its `error`; no answer, no duration).
INTERRUPTED = "interrupted: the notifier died during this attempt"
# Lua: record the attempt in flight, begun at `started` (ms), as INTERRUPTED (KEYS: 1 delivery,
# 2 attempts).
_PUSH_INTERRUPTED = """
  redis.call('RPUSH', KEYS[2], '{"at":' .. started .. ',"status_code":null,"duration_ms":null,' ..
             '"error":ERROR}')
  redis.call('LTRIM', KEYS[2], -MAX_KEPT, -1)
  redis.call('HINCRBY', KEYS[1], 'attempts', 1)
  redis.call('HINCRBY', KEYS[1], 'tries', 1)
""".replace("ERROR", json.dumps(INTERRUPTED)).replace("MAX_KEPT", str(MAX_ATTEMPTS_KEPT))

# An attempt starts. KEYS: 1 delivery, 2 attempts, 3 job's webhook index. ARGV: 1 round, 2 now, 3 ttl.
# An attempt found in flight was cut short (its notifier died and rq ran the job again): it is
# recorded as such.
# Returns {'gone'} | {'stale'} (another round now) | {'done', state} |
# {'go', attempts before this one in this round, job id, event, event at, gone reason or ''}.
BEGIN = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'gone'} end
local d = redis.call('HMGET', KEYS[1], 'round', 'state', 'started_at', 'job', 'event', 'event_at')
if d[1] ~= ARGV[1] then return {'stale'} end
if d[2] == 'succeeded' or d[2] == 'dead' then return {'done', d[2]} end
if d[2] == 'delivering' and d[3] then
  local started = d[3]
PUSH_INTERRUPTED
end
redis.call('HSET', KEYS[1], 'state', 'delivering', 'started_at', ARGV[2], 'next_attempt_at', '')
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
local gone = redis.call('HGET', KEYS[3], 'gone') or ''
return {'go', tonumber(redis.call('HGET', KEYS[1], 'tries')), d[4], d[5], d[6] or '', gone}
""".replace("PUSH_INTERRUPTED", _PUSH_INTERRUPTED)

# The notifier that ran an attempt died; its rq job is queued again at once (in the same
# transaction: workers/webhooks/orphans.py). KEYS: 1 delivery, 2 attempts. ARGV: 1 round, 2 now,
# 3 ttl, 4 '1' when rq gives the job up (its crash retries are spent): the delivery is dead.
# The attempt in flight, if any, is recorded as INTERRUPTED and the delivery is `pending` again
# (its next attempt is due now), or `dead`. Returns 1 if an attempt was in flight, else 0 (the
# notifier died before the attempt began, or after it was recorded: nothing to add).
INTERRUPT = """
if redis.call('HGET', KEYS[1], 'round') ~= ARGV[1] then return 0 end
local d = redis.call('HMGET', KEYS[1], 'state', 'started_at')
local cut = 0
if d[1] == 'delivering' and d[2] then
  local started = d[2]
PUSH_INTERRUPTED
  redis.call('HSET', KEYS[1], 'last_status', '', 'last_attempt_at', ARGV[2])
  redis.call('HSET', KEYS[1], 'last_error', ERROR)
  redis.call('HDEL', KEYS[1], 'started_at')
  cut = 1
end
if ARGV[4] == '1' and d[1] ~= 'succeeded' and d[1] ~= 'dead' then
  redis.call('HSET', KEYS[1], 'state', 'dead', 'next_attempt_at', '')
elseif cut == 1 then
  redis.call('HSET', KEYS[1], 'state', 'pending', 'next_attempt_at', ARGV[2])
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return cut
""".replace("PUSH_INTERRUPTED", _PUSH_INTERRUPTED).replace("ERROR", json.dumps(INTERRUPTED))

# An attempt ended. KEYS: 1 delivery, 2 attempts, 3 job's webhook index, 4 job hash, 5 job
# outputs. ARGV: 1 round, 2 new state, 3 the attempt (JSON), 4 status ('' none), 5 error ('' none),
# 6 next attempt at ('' none), 7 ttl, 8 now, 9 gone reason ('' none: else set on the job's index).
# Metrics: optionally KEYS[6], keys.METRICS, and ARGV[10], the attempt's field there
# (shared/metrics.py webhook_field), which gets 1 more (not for a stale round).
# The job and its outputs live at least `ttl` more (an attempt is a change of the job: a retry
# hours later still finds it). Returns 0 if stale.
FINISH = """
if redis.call('HGET', KEYS[1], 'round') ~= ARGV[1] then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[3])
redis.call('LTRIM', KEYS[2], -MAX_KEPT, -1)
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HINCRBY', KEYS[1], 'tries', 1)
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'last_status', ARGV[4], 'last_error', ARGV[5],
           'next_attempt_at', ARGV[6], 'last_attempt_at', ARGV[8])
redis.call('HDEL', KEYS[1], 'started_at')
if KEYS[6] then redis.call('HINCRBY', KEYS[6], ARGV[10], 1) end  -- metrics
redis.call('EXPIRE', KEYS[1], ARGV[7])
redis.call('EXPIRE', KEYS[2], ARGV[7])
if ARGV[9] ~= '' then
  redis.call('HSET', KEYS[3], 'gone', ARGV[9])
  redis.call('EXPIRE', KEYS[3], ARGV[7])
end
for k = 3, 5 do
  local left = redis.call('TTL', KEYS[k])
  if left >= 0 and left < tonumber(ARGV[7]) then redis.call('EXPIRE', KEYS[k], ARGV[7]) end
end
return 1
""".replace("MAX_KEPT", str(MAX_ATTEMPTS_KEPT))

# Send a delivery again (the API). KEYS: 1 delivery, 2 job's webhook index, 3 events stream,
# 4 the job's redelivery allowance (keys.webhook_redelivered). ARGV: 1 now, 2 ttl, 3 job id,
# 4 delivery id, 5 least time between two redeliveries of the job (ms; 0: no limit).
# Returns {1, round} | {0, state} while in flight | {-1} no such delivery | {-2, ms left} too soon
# after the last redelivery. Only a redelivery made takes the allowance (a refusal leaves it), and
# `too soon` comes before `in flight`: calls on the heels of one that was made all hear when to
# come back, whatever the notifier has done with it meanwhile (a receiver answering 410 makes
# the delivery dead again at once: without the allowance, every call would be one more POST).
REDELIVER = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
local left = redis.call('PTTL', KEYS[4])
if left > 0 then return {-2, left} end
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'pending' or state == 'delivering' or state == 'failed' then return {0, state} end
local round = redis.call('HINCRBY', KEYS[1], 'round', 1)
redis.call('HSET', KEYS[1], 'state', 'pending', 'tries', 0, 'next_attempt_at', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('HDEL', KEYS[2], 'gone')
redis.call('XADD', KEYS[3], '*', 'job', ARGV[3], 'type', 'REDELIVER_EVENT', 'delivery', ARGV[4],
           'round', round, 'at', ARGV[1])
if tonumber(ARGV[5]) > 0 then redis.call('SET', KEYS[4], round, 'PX', ARGV[5]) end
return {1, round}
""".replace("REDELIVER_EVENT", REDELIVER_EVENT)


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
            {"at": self.at_ms, "status_code": self.status_code, "duration_ms": self.duration_ms,
             "error": self.error},
            separators=(",", ":"),
        )  # fmt: skip

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
                    at=ms_to_datetime(t.at_ms), status_code=t.status_code, error=t.error,
                    duration_ms=t.duration_ms,
                )  # fmt: skip
                for t in tries
            ],
            "last_status_code": int(d["last_status"]) if d.get("last_status") else None,
            "last_error": d.get("last_error") or None,
            "next_attempt_at": ms_to_datetime(d.get("next_attempt_at") or None),
        }
    )
