"""Webhook messages, signatures checked by `standardwebhooks` (a verifier no one here wrote),
the secret and schedule settings, and the pure retry decisions."""

from __future__ import annotations

import base64
import json
import os
import stat
import time
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from shared import webhook_secret
from shared.messages import EventType, JobView, WebhookState
from shared.settings import Settings, parse_delays
from tests.support.webhooks import SECRET
from workers.webhooks import signing
from workers.webhooks.attempt import Decision, decide, due_at
from workers.webhooks.delivery import RETRY_AFTER_MAX_S, Outcome, classify, parse_retry_after


def view() -> JobView:
    return JobView.model_validate(
        {
            "id": "j1",
            "pipeline": "p",
            "status": "succeeded",
            "progress": {"done": 1, "total": 1},
            "created_at": "2026-01-01T00:00:00Z",
            "outputs": [{"index": 0, "status": "succeeded", "result": {"n": "é"}}],
            "webhook": {
                "url": "https://example.com/h",
                "events": ["completed"],
                "state": "failed",
                "attempts": [{"at": "2026-01-01T00:00:01Z", "status_code": 500, "duration_ms": 3}],
            },
        }
    )


def test_a_signed_message_verifies_with_standardwebhooks() -> None:
    body = signing.event_body(EventType.completed, 1_767_225_600_123, view())
    now = int(time.time())
    headers = signing.headers(signing.secret_key(SECRET), "msg_j1_1-0", now, body)
    payload = Webhook(SECRET).verify(body, headers)
    assert payload["type"] == "job.completed" and payload["timestamp"] == "2026-01-01T00:00:00.123Z"
    assert payload["data"]["id"] == "j1" and payload["data"]["outputs"][0]["result"] == {"n": "é"}
    # The body carries the webhook's URL and events, not its delivery state.
    assert payload["data"]["webhook"] == {"url": "https://example.com/h", "events": ["completed"]}
    assert headers["webhook-id"] == "msg_j1_1-0" and headers["webhook-timestamp"] == str(now)
    assert headers["content-type"] == "application/json"
    assert headers["webhook-signature"] == Webhook(SECRET).sign(
        "msg_j1_1-0", datetime.fromtimestamp(now, tz=UTC), body.decode()
    )


@pytest.mark.parametrize("tamper", ["body", "id", "timestamp", "secret"])
def test_a_tampered_message_does_not_verify(tamper: str) -> None:
    body = signing.event_body(EventType.completed, 1_767_225_600_123, view())
    headers = signing.headers(signing.secret_key(SECRET), "msg_a", int(time.time()), body)
    secret = SECRET
    if tamper == "body":
        body = body.replace(b'"j1"', b'"j2"')
    elif tamper == "id":
        headers["webhook-id"] = "msg_b"
    elif tamper == "timestamp":
        headers["webhook-timestamp"] = str(int(headers["webhook-timestamp"]) - 1)
    else:
        secret = webhook_secret.new_secret()
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, headers)


def test_new_secrets_are_valid_and_kept_private_in_their_file(tmp_path: Path) -> None:
    path = tmp_path / webhook_secret.SECRET_FILE
    first = webhook_secret.load_or_create_secret(path)
    assert first.startswith("whsec_") and len(signing.secret_key(first)) == 32
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert webhook_secret.load_or_create_secret(path) == first  # made once, then reused
    assert webhook_secret.new_secret() != first


def test_a_second_up_making_the_secret_meanwhile_reads_a_whole_one_and_both_agree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # two `dlpipe up`s on one data dir start together: the second one runs its whole
    # load_or_create_secret while the first is making its secret (the race CI once hit)
    path = tmp_path / webhook_secret.SECRET_FILE
    made = webhook_secret.new_secret
    seen_meanwhile: list[str] = []

    def new_secret_while_another_up_starts() -> str:
        monkeypatch.setattr(webhook_secret, "new_secret", made)
        seen_meanwhile.append(webhook_secret.load_or_create_secret(path))
        return made()

    monkeypatch.setattr(webhook_secret, "new_secret", new_secret_while_another_up_starts)
    first = webhook_secret.load_or_create_secret(path)
    assert seen_meanwhile == [first] == [path.read_text().strip()]
    assert [p.name for p in tmp_path.iterdir()] == [webhook_secret.SECRET_FILE]  # no temp file left


def test_dlpipe_up_gives_its_children_a_secret_only_when_none_is_set(tmp_path: Path) -> None:
    made = webhook_secret.secret_env(Settings(data_dir=tmp_path / "data"))["DLPIPE_WEBHOOK_SECRET"]
    assert (tmp_path / "data" / webhook_secret.SECRET_FILE).read_text().strip() == made
    assert webhook_secret.secret_env(Settings(data_dir=tmp_path / "other", webhook_secret=SECRET)) == {}
    assert not (tmp_path / "other").exists()


@pytest.mark.parametrize(
    "secret",
    [
        "0123456789abcdef0123456789abcdef",
        "whsec_",
        "whsec_not base64!",
        "whsec_" + "QUJD" * 4,
        "whsec_" + base64.b64encode(b"x" * 65).decode(),
    ],
)
def test_bad_secrets_are_refused_at_start(secret: str) -> None:
    with pytest.raises(ValidationError, match="webhook_secret"):
        Settings(webhook_secret=secret)


def test_the_secret_reaches_child_processes_but_not_logs() -> None:
    settings = Settings(webhook_secret=SECRET)
    assert settings.worker_env()["DLPIPE_WEBHOOK_SECRET"] == SECRET
    assert SECRET not in repr(settings) and SECRET not in str(settings.model_dump())


def test_the_retry_schedule_setting() -> None:
    assert Settings().webhook_delays_s == (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
    assert Settings(webhook_retry_schedule_s="0,1,1").webhook_delays_s == (0.0, 1.0, 1.0)
    assert parse_delays(" 0.5 , 2 ") == (0.5, 2.0)
    for bad in ("", "1,,2", "-1", "a,b", "nan", "inf"):
        with pytest.raises(ValidationError, match="webhook_retry_schedule_s"):
            Settings(webhook_retry_schedule_s=bad)


def test_retry_after_in_seconds_or_as_a_date_and_capped() -> None:
    now = 1_800_000_000.0
    assert parse_retry_after("7", now) == 7.0
    later = format_datetime(datetime.fromtimestamp(now + 90, tz=UTC), usegmt=True)
    assert parse_retry_after(later, now) == pytest.approx(90.0)
    earlier = format_datetime(datetime.fromtimestamp(now - 90, tz=UTC), usegmt=True)
    assert parse_retry_after(earlier, now) == 0.0
    assert parse_retry_after("999999", now) == RETRY_AFTER_MAX_S
    for garbage in (None, "", "soon", "-5", "1.5e3"):
        assert parse_retry_after(garbage, now) is None


@pytest.mark.parametrize(
    ("status", "headers", "ok", "final", "retry_after"),
    [
        (200, {}, True, False, None),
        (204, {}, True, False, None),
        (299, {}, True, False, None),
        (410, {}, False, True, None),  # gone: no retry
        (301, {"location": "https://elsewhere"}, False, False, None),  # redirects are failures
        (429, {"retry-after": "30"}, False, False, 30.0),
        (503, {"retry-after": "2"}, False, False, 2.0),
        (500, {"retry-after": "30"}, False, False, None),  # Retry-After counts on 429/503 only
        (404, {}, False, False, None),
    ],
)
def test_answers_are_classified(
    status: int, headers: dict, ok: bool, final: bool, retry_after: float | None
) -> None:
    outcome = classify(status, httpx.Headers(headers), time.time())
    assert (outcome.ok, outcome.final, outcome.retry_after_s) == (ok, final, retry_after)
    assert outcome.status_code == status
    assert ok or str(status) in (outcome.error or "")


DELAYS = (0.0, 5.0, 300.0)


def test_the_schedule_gives_each_retry_its_delay_then_dead_letters() -> None:
    failed = Outcome(ok=False, status_code=500, error="HTTP 500")
    assert decide(failed, 1, DELAYS) == Decision(WebhookState.failed, 5.0)
    assert decide(failed, 2, DELAYS) == Decision(WebhookState.failed, 300.0)
    assert decide(failed, 3, DELAYS) == Decision(WebhookState.dead)  # the last attempt of three
    assert decide(Outcome(ok=True, status_code=204), 3, DELAYS) == Decision(WebhookState.succeeded)


def test_retry_after_waits_at_least_as_long_as_asked_and_final_outcomes_stop() -> None:
    busy = Outcome(ok=False, status_code=503, error="HTTP 503", retry_after_s=60.0)
    assert decide(busy, 1, DELAYS).delay_s == 60.0  # longer than the schedule's 5 s
    assert decide(busy, 2, DELAYS).delay_s == 300.0  # never sooner than the schedule
    gone = Outcome(ok=False, status_code=410, error="HTTP 410", final=True)
    assert decide(gone, 1, DELAYS).state == WebhookState.dead


def test_due_times_are_whole_seconds_never_early() -> None:
    assert due_at(0, 100.25) == 100.25  # at once
    assert due_at(1, 100.25) == 102.0  # rq keeps whole seconds: the next one after 101.25
    assert due_at(2, 100.0) == 102.0 and due_at(0.5, 100.75) == 102.0


def test_bodies_are_compact_utf8_json() -> None:
    body = signing.event_body(EventType.progress, 0, view())
    assert b" " not in body.split(b'"data"')[0] and "é".encode() in body
    assert json.loads(body)["type"] == "job.progress"
