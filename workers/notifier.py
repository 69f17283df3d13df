"""`dlpipe worker notifier`: job events become signed webhook deliveries, run as rq jobs.

One process, four parts, each a thread (or several):

- the events consumer reads the events stream with its consumer group, taking back the
  events of a notifier that died as the other workers do (workers/reclaim.py). For each
  event its job's webhook wants (job.started, job.progress, job.completed; see
  `webhook_events`) it creates the delivery (shared/webhooks.py; its id is the `webhook-id`)
  and queues its first attempt as an rq job; a `webhook.redeliver` entry (from the API)
  queues a delivery's next round. It looks up the webhooks of a batch of events in one round
  trip and acknowledges the batch once it is done (one more): an event handled twice (a crash
  in between) finds its delivery and rq job already there.
- `DLPIPE_WEBHOOK_CONCURRENCY` rq workers run the deliveries (workers/webhooks/attempt.py),
  each attempt signed, guarded against internal addresses and cut at its deadline;
- rq's scheduler moves retries whose delay has passed back to the queue;
- the recovery (workers/webhooks/orphans.py) queues again, within seconds, the deliveries a
  notifier that died was making.

The main thread owns the signals and the process's heartbeat (which the recovery of other
notifiers reads: it lasts until every thread is done): the first SIGTERM/SIGINT stops the
consumer after its batch and each rq worker after the delivery in hand; a second one exits at
once. A thread that dies (an error none of them expects) fails the whole process fast: the
others get FAIL_GRACE_S to finish what they hold, then it exits 1 and its supervisor
(`dlpipe up`, Compose) starts a new one, instead of one that lingers delivering nothing.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from shared import codecs, keys
from shared import webhooks as state
from shared.logs import setup_logging
from shared.messages import JobEvent, now_ms, parse_webhook_events
from shared.netguard import AddressPolicy
from shared.redis import webhooks as webhook_scripts
from shared.settings import Settings
from workers import runtime
from workers.heartbeat import Heartbeat
from workers.reclaim import give_up_reason
from workers.stage_worker import StageWorker
from workers.webhooks import attempt, rqthreads, signing
from workers.webhooks.delivery import Sender
from workers.webhooks.orphans import Recovery

log = logging.getLogger("workers.notifier")  # not __main__ under `python -m`

READ_COUNT = 16
JOIN_S = 60.0  # how long the main thread waits for the threads to finish their work at a stop
FAIL_GRACE_S = 5.0  # a thread died: how long the others get to finish theirs before the exit
WATCH_S = 0.5  # how often the main thread looks at its threads

# (job id, delivery id, round, delay in seconds) -> queued (False: it was queued already)
Enqueue = Callable[[str, str, int, float], bool]


class Notifier(StageWorker):
    """The events consumer: one step reads a few events and queues their deliveries."""

    kind = "notifier"
    group = keys.NOTIFIER_GROUP

    def __init__(self, client: redis.Redis, settings: Settings, consumer: str, enqueue: Enqueue) -> None:
        super().__init__(client, settings, consumer, [], stream_keys=[keys.EVENTS])
        self.enqueue = enqueue

    def setup(self) -> None:
        try:
            self.redis.xgroup_create(keys.EVENTS, keys.NOTIFIER_GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def serving(self) -> str:
        return "job events"

    def heartbeat(self) -> None:
        return None  # the process's (serve): it lasts until the rq threads are done too

    def _read(self, start: str, count: int, block_ms: int | None) -> list[tuple[str, dict[Any, Any]]]:
        reply: Any = self.redis.xreadgroup(
            keys.NOTIFIER_GROUP, self.consumer, {keys.EVENTS: start}, count=count, block=block_ms
        )
        return [
            (codecs.text(entry_id), fields or {})
            for _, messages in reply or []
            for entry_id, fields in messages
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
        looked_up = self._look_up([fields for _, fields in events])
        for event_id, fields in events:
            self.handle(event_id, fields, looked_up)
        if events:  # one round trip for the batch: an event handled again finds its delivery
            self.redis.xack(keys.EVENTS, keys.NOTIFIER_GROUP, *[event_id for event_id, _ in events])
        return len(taken.give_up) + len(events)

    def _look_up(self, batch: list[dict[Any, Any]]) -> dict[str, tuple[Any, Any, Any]]:
        """Each job's webhook, the events it wants and whether its receiver is gone, for a batch
        of events in one round trip (most jobs have no webhook: their events are only dropped)."""
        jobs = list(dict.fromkeys(codecs.text(f[b"job"] if b"job" in f else f.get("job", "")) for f in batch))
        jobs = [job for job in jobs if job]
        if not jobs:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for job in jobs:
            pipe.hmget(keys.job(job), ["webhook", "webhook_events"])
            pipe.hget(keys.job_webhook(job), "gone")
        replies = pipe.execute()
        return {job: (*replies[2 * i], replies[2 * i + 1]) for i, job in enumerate(jobs)}

    def handle(
        self, event_id: str, fields: dict[Any, Any], looked_up: dict[str, tuple[Any, Any, Any]] | None = None
    ) -> str:
        """Queue what an event asks for; returns what was done (for logs and tests). `looked_up`:
        the batch's webhook lookups (`_look_up`), else this event's are read here."""
        f = {codecs.text(k): codecs.text(v) for k, v in fields.items()}
        if f.get("type") == state.REDELIVER_EVENT:
            try:
                job_id, delivery, round_ = f["job"], f["delivery"], int(f["round"])
            except (KeyError, ValueError) as exc:
                log.error("dropping malformed redelivery %s: %s", event_id, exc)
                return "malformed"
            queued = self.enqueue(job_id, delivery, round_, 0.0)
            log.info("job=%s webhook %s round %d queued (redelivery)", job_id, delivery, round_)
            return "queued" if queued else "queued already"
        try:
            event = JobEvent.from_fields(fields)
        except (KeyError, ValueError) as exc:
            log.error("dropping malformed event %s: %s", event_id, exc)
            return "malformed"
        if looked_up is not None and event.job_id in looked_up:
            url, wanted, gone = looked_up[event.job_id]
        else:
            pipe = self.redis.pipeline(transaction=False)
            pipe.hmget(keys.job(event.job_id), ["webhook", "webhook_events"])
            pipe.hget(keys.job_webhook(event.job_id), "gone")
            (url, wanted), gone = pipe.execute()
        if url is None:
            if event.type.short == "completed":
                log.debug("job=%s has no webhook (or is gone)", event.job_id)
            return "no webhook"
        if event.type.short not in parse_webhook_events(codecs.text(wanted) if wanted else None):
            return "not wanted"
        if gone:
            log.info("job=%s %s not sent: %s", event.job_id, event.type.value, codecs.text(gone))
            return "receiver gone"
        delivery = state.delivery_id(event.job_id, event_id)
        at_ms = event.at_ms or int(event_id.split("-", 1)[0])
        delay = self.settings.webhook_delays_s[0]
        now = now_ms()
        due_ms = int(attempt.due_at(delay, now / 1000) * 1000)
        made = webhook_scripts.webhook_create(
            delivery=delivery,
            job_id=event.job_id,
            event=event.type,
            event_at=at_ms,
            now=now,
            ttl_s=self.settings.job_ttl_s,
            due_ms=due_ms,
        ).run(self.redis)
        queued = self.enqueue(event.job_id, delivery, made.round, delay)
        created = made.created
        if created:
            log.info("job=%s webhook %s %s queued", event.job_id, event.type.value, delivery)
        return "queued" if queued or created else "queued already"


def signing_key(settings: Settings) -> bytes | None:
    """The HMAC key of DLPIPE_WEBHOOK_SECRET; None (loudly) when it is not set."""
    if settings.webhook_secret is None:
        log.error(
            "DLPIPE_WEBHOOK_SECRET is not set: no webhook will be sent (each delivery is dead-lettered "
            "with the reason; redeliver once a secret is set). `dlpipe up` makes one in its data dir."
        )
        return None
    return signing.secret_key(settings.webhook_secret.get_secret_value())


def address_policy(settings: Settings) -> AddressPolicy:
    if settings.webhook_allow_private:
        log.warning("DLPIPE_WEBHOOK_ALLOW_PRIVATE=true: webhooks may reach internal addresses")
    return AddressPolicy(
        allow_private=settings.webhook_allow_private, override="DLPIPE_WEBHOOK_ALLOW_PRIVATE"
    )


def serve(settings: Settings, stop: threading.Event, consumer: str | None = None) -> int:
    """Run the events consumer, the rq scheduler, the recovery and the rq workers as threads
    until `stop`, then let each finish what it holds: 0. Or until one of them dies: 1, within
    WATCH_S + FAIL_GRACE_S (threads still busy then are left to die with the process)."""
    consumer = consumer or runtime.new_consumer_id()
    events_client = runtime.redis_client(settings, name=consumer)
    rq_client = runtime.redis_client(settings, name=consumer)  # rq raises its own client's socket timeout
    sender = Sender(settings.webhook_timeout_s, address_policy(settings))
    attempt.configure(attempt.Context(rq_client, settings, sender, signing_key(settings)))
    queue = rqthreads.delivery_queue(rq_client)

    def enqueue(job_id: str, delivery: str, round_: int, delay_s: float) -> bool:
        return rqthreads.enqueue(
            queue, job_id, delivery, round_, delay_s, settings.webhook_timeout_s, settings.job_ttl_s
        )

    notifier = Notifier(events_client, settings, consumer, enqueue)
    recovery = Recovery(rq_client, queue, settings)
    targets: dict[str, Callable[[], None]] = {
        "events": lambda: notifier.run(stop),
        "rq-scheduler": lambda: rqthreads.run_scheduler(rq_client, consumer, settings.worker_ttl_ms, stop),
        "webhook-recovery": lambda: recovery.run(stop),
    }
    for n in range(settings.webhook_concurrency):
        targets[f"rq-worker-{n}"] = lambda n=n: rqthreads.run_worker(queue, consumer, n, stop)
    heartbeat = Heartbeat(
        events_client, consumer, Notifier.kind, [], settings.heartbeat_interval_ms, settings.worker_ttl_ms
    ).start()
    threads = [
        threading.Thread(target=_logged, args=(target,), name=name, daemon=True)
        for name, target in targets.items()
    ]
    for thread in threads:
        thread.start()
    log.info(
        "consumer=%s delivering webhooks: %d rq workers on queue %s, retry schedule %s s",
        consumer,
        settings.webhook_concurrency,
        keys.WEBHOOK_QUEUE,
        settings.webhook_retry_schedule_s,
    )
    died: list[str] = []
    try:
        while not stop.wait(WATCH_S):
            died = [thread.name for thread in threads if not thread.is_alive()]
            if died:
                log.error(
                    "consumer=%s notifier thread %s died; exiting 1 within %gs so that it is restarted",
                    consumer,
                    ", ".join(died),
                    FAIL_GRACE_S,
                )
                break
    finally:
        stop.set()
        deadline = time.monotonic() + (FAIL_GRACE_S if died else JOIN_S)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        busy = [thread.name for thread in threads if thread.is_alive()]
        if busy:
            log.error("consumer=%s threads still busy, left to die with the process: %s", consumer, busy)
        heartbeat.stop()
        attempt.configure(None)
        sender.close()
        events_client.close()
        rq_client.close()
    return 1 if died else 0


def _logged(target: Callable[[], None]) -> None:
    """A thread's body: an error that ends it is logged (the main thread then stops the process)."""
    try:
        target()
    except BaseException:  # noqa: BLE001 - logged here; the thread ends and the process with it
        log.exception("thread %s died", threading.current_thread().name)


def main(settings: Settings) -> int:
    setup_logging(settings.log_level, "notifier")
    # httpx's INFO lines print webhook URLs (they may hold tokens)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    rqthreads.quiet_rq()
    stop = threading.Event()
    runtime.install_stop_signals(stop)
    return serve(settings, stop)


if __name__ == "__main__":
    sys.exit(main(Settings()))
