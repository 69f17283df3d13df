"""Webhook deliveries driven by hand on fakeredis: the tests' signing secret, a finished job's
delivery taken by the notifier, and the delivery state machine's scripts (begin, redeliver)."""

from __future__ import annotations

import base64
from typing import Any

from shared import keys
from shared import webhooks as state
from shared.messages import now_ms
from shared.pipeline_spec import parse_pipelines
from shared.redis import scripts
from shared.settings import Settings
from tests.stagefns import pipelines, queue_job
from workers.notifier import Notifier

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
SETTINGS = Settings(
    redis_url="redis://unused", read_block_ms=1, webhook_secret=SECRET, webhook_retry_schedule_s="0,1,1"
)
HOOK = "http://hooks.example.com/in"


def make_notifier(
    client: Any, settings: Settings = SETTINGS
) -> tuple[Notifier, list[tuple[str, str, int, float]]]:
    """The notifier's events consumer, its rq enqueue replaced by a list of what it queued."""
    queued: list[tuple[str, str, int, float]] = []

    def enqueue(job_id: str, delivery: str, round_: int, delay_s: float) -> bool:
        queued.append((job_id, delivery, round_, delay_s))
        return True

    notifier = Notifier(client, settings, "n-1", enqueue)
    notifier.recover()
    return notifier, queued


def finished_job(client: Any, job_id: str = "j1", url: str = HOOK, wanted: list[str] | None = None) -> str:
    """A finished job with a webhook, its completion event taken by the notifier: its delivery id."""
    sums = parse_pipelines(pipelines()).pipelines["sums"]
    queue_job(client, sums, job_id, [{"v": 1}], webhook=url, webhook_events=wanted)
    client.hset(keys.job(job_id), mapping={"status": "succeeded", "done": 1, "completed_at": now_ms()})
    client.xadd(keys.EVENTS, {"job": job_id, "type": "job.completed", "at": now_ms()})
    notifier, queued = make_notifier(client)
    notifier.run_once()
    [(_, delivery, round_, delay)] = [q for q in queued if q[0] == job_id]
    assert (round_, delay) == (1, 0.0)
    return delivery


def begin(client: Any, delivery: str, round_: int, job_id: str = "j1") -> list[Any]:
    """WEBHOOK_BEGIN: an attempt of `round_` starts; the script's reply."""
    dkeys = [keys.webhook(delivery), keys.webhook_attempts(delivery), keys.job_webhook(job_id)]
    return [state.text(v) for v in client.eval(scripts.WEBHOOK_BEGIN, 3, *dkeys, round_, now_ms(), 3600)]


def redeliver(client: Any, delivery: str, job_id: str = "j1") -> list[Any]:
    """WEBHOOK_REDELIVER, as the API's redeliver route runs it; the script's reply."""
    interval_ms = round(SETTINGS.webhook_redeliver_interval_s * 1000)
    reply = client.eval(
        scripts.WEBHOOK_REDELIVER,
        4,
        keys.webhook(delivery),
        keys.job_webhook(job_id),
        keys.EVENTS,
        keys.webhook_redelivered(job_id),
        now_ms(),
        3600,
        job_id,
        delivery,
        interval_ms,
    )
    return [state.text(v) for v in reply]
