"""`dlpipe worker notifier`: POST each completed job to its webhook.

Reads the events stream with its own consumer group. For a `job.completed` event whose
job has a webhook, it POSTs the job (the same JSON as `GET /v1/jobs/{id}`) and acks the
event whatever the outcome: delivery is at most `webhook_attempts` tries, in this
process, with short waits between them. The seam for durable retries, signing and
dead-lettering is `Notifier.deliver` (any `Deliver` callable): replace it to enqueue a
delivery job instead of sending inline.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import redis

from shared import keys
from shared.logs import setup_logging
from shared.messages import EventType, JobEvent, JobView, job_view_from_redis
from shared.settings import Settings
from workers import runtime
from workers.heartbeat import Heartbeat
from workers.reclaim import Reclaimer, give_up_reason

log = logging.getLogger("workers.notifier")  # not __main__ under `python -m`

READ_COUNT = 16
RETRY_DELAYS_S = (0.5, 1.0, 2.0, 4.0)  # waits before the 2nd, 3rd, ... attempt
RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
USER_AGENT = "dlpipe-webhook/0.1"


@dataclass(frozen=True)
class Delivery:
    """How a webhook delivery ended."""

    ok: bool
    attempts: int
    status: int | None = None  # the last HTTP status, if a response came
    error: str | None = None  # why it failed


Deliver = Callable[[str, JobView], Delivery]  # (event id, job) -> outcome


class HttpDelivery:
    """POST a job's JSON to its webhook: 2xx succeeds; no redirects followed; retries network
    errors, timeouts and 408/425/429/5xx up to `attempts` times."""

    def __init__(
        self,
        timeout_s: float,
        attempts: int,
        client: httpx.Client | None = None,
        sleep: Callable[[float], Any] = time.sleep,
    ) -> None:
        self.attempts = attempts
        self.client = client or httpx.Client(timeout=timeout_s, follow_redirects=False)
        self.sleep = sleep

    def __call__(self, event_id: str, view: JobView) -> Delivery:
        assert view.webhook is not None
        body = view.model_dump_json().encode()
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": event_id,  # the same on every attempt: receivers can deduplicate
        }
        status: int | None = None
        error = "no attempt made"
        for attempt in range(1, self.attempts + 1):
            if attempt > 1:
                self.sleep(RETRY_DELAYS_S[min(attempt - 2, len(RETRY_DELAYS_S) - 1)])
            try:
                response = self.client.post(view.webhook, content=body, headers=headers)
            except httpx.HTTPError as exc:
                status, error = None, f"{type(exc).__name__}: {exc}"
                continue
            status = response.status_code
            if 200 <= status < 300:
                return Delivery(ok=True, attempts=attempt, status=status)
            error = f"HTTP {status}"
            if status not in RETRYABLE_STATUS:
                return Delivery(ok=False, attempts=attempt, status=status, error=error)
        return Delivery(ok=False, attempts=self.attempts, status=status, error=error)

    def close(self) -> None:
        self.client.close()


class Notifier:
    kind = "notifier"

    def __init__(self, client: redis.Redis, settings: Settings, consumer: str, deliver: Deliver) -> None:
        self.redis = client
        self.settings = settings
        self.consumer = consumer
        self.deliver = deliver
        self.reclaimer = Reclaimer(
            client, keys.NOTIFIER_GROUP, consumer, [keys.EVENTS], settings.lease_ms, settings.max_deliveries
        )

    def setup(self) -> None:
        try:
            self.redis.xgroup_create(keys.EVENTS, keys.NOTIFIER_GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def recover(self) -> None:
        """Make the group; queue the events this consumer read but did not ack to be taken back."""
        self.setup()
        self.reclaimer.adopt_own()

    def _read(self, start: str, count: int, block_ms: int | None) -> list[tuple[str, dict[Any, Any]]]:
        reply: Any = self.redis.xreadgroup(
            keys.NOTIFIER_GROUP, self.consumer, {keys.EVENTS: start}, count=count, block=block_ms
        )
        return [
            (_text(entry_id), fields or {}) for _, messages in reply or [] for entry_id, fields in messages
        ]

    def run_once(self, block_ms: int | None = None) -> int:
        """Handle an event taken back (own unacked, or idle under a dead notifier) alone, or a
        few new events; ack each once handled. Returns the events handled."""
        taken = self.reclaimer.take()
        for claimed in taken.give_up:
            reason = give_up_reason(claimed.deliveries, "notifier", "event")
            log.error(
                "job=%s event %s %s; dead-lettered", claimed.fields.get("job", "?"), claimed.entry_id, reason
            )
            self.reclaimer.dead_letter(claimed, reason)
        events: list[tuple[str, dict[Any, Any]]] = [(c.entry_id, c.fields) for c in taken.run]
        if not events:
            block = self.settings.read_block_ms if block_ms is None else block_ms
            events = self._read(">", READ_COUNT, block)
        for event_id, fields in events:
            self.handle(event_id, fields)
            self.redis.xack(keys.EVENTS, keys.NOTIFIER_GROUP, event_id)
        return len(taken.give_up) + len(events)

    def handle(self, event_id: str, fields: dict[Any, Any]) -> Delivery | None:
        try:
            event = JobEvent.from_fields(fields)
        except (KeyError, ValueError) as exc:
            log.error("dropping malformed event %s: %s", event_id, exc)
            return None
        if event.type != EventType.completed:
            return None
        view = self.load_job(event.job_id)
        if view is None:
            log.warning("job=%s is gone (expired?) before its completion event was handled", event.job_id)
            return None
        if not view.webhook:
            return None
        started = time.monotonic()
        delivery = self.deliver(event_id, view)
        took = time.monotonic() - started
        if delivery.ok:
            log.info(
                "job=%s webhook delivered (HTTP %s, attempt %d, %.2fs)",
                view.id,
                delivery.status,
                delivery.attempts,
                took,
            )
        else:
            log.error(
                "job=%s webhook delivery failed after %d attempts (%.2fs): %s; giving up",
                view.id,
                delivery.attempts,
                took,
                delivery.error,
            )
        return delivery

    def load_job(self, job_id: str) -> JobView | None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(keys.job(job_id))
        pipe.hgetall(keys.job_outputs(job_id))
        job, outputs = pipe.execute()
        return job_view_from_redis(job, outputs) if job else None

    def run(self, stop: threading.Event) -> None:
        heartbeat = Heartbeat(
            self.redis,
            self.consumer,
            self.kind,
            [],
            self.settings.heartbeat_interval_ms,
            self.settings.worker_ttl_ms,
        )
        with heartbeat:
            log.info("consumer=%s delivering webhooks", self.consumer)
            runtime.run_loop(f"notifier {self.consumer}", self.run_once, stop, recover=self.recover)
        runtime.retire_consumer(self.redis, keys.NOTIFIER_GROUP, self.consumer, [keys.EVENTS])
        log.info("consumer=%s stopped", self.consumer)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def main(settings: Settings) -> int:
    setup_logging(settings.log_level, "notifier")
    logging.getLogger("httpx").setLevel(
        logging.WARNING
    )  # its INFO lines print webhook URLs (may hold tokens)
    stop = threading.Event()
    runtime.install_stop_signals(stop)
    deliver = HttpDelivery(settings.webhook_timeout_s, settings.webhook_attempts)
    try:
        Notifier(runtime.redis_client(settings), settings, runtime.new_consumer_id(), deliver).run(stop)
    finally:
        deliver.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(Settings()))
