"""dlpipe.verify_webhook against the real signer (workers/webhooks/signing.py) and against the
Standard Webhooks library's own signatures: a valid event passes, tampering and replays fail."""

from __future__ import annotations

import time

import pytest
from standardwebhooks.webhooks import Webhook

import dlpipe
from shared.messages import EventType, JobStatus, JobView, Progress, WebhookView, now_ms
from shared.webhook_secret import new_secret
from workers.webhooks import signing


def delivery(secret: str, at: int) -> tuple[bytes, dict[str, str]]:
    view = JobView(
        id="abc",
        pipeline="image-classify",
        status=JobStatus.succeeded,
        progress=Progress(done=1, total=1),
        created_at="2026-01-01T00:00:00Z",
        metadata={"who": "é"},
        webhook=WebhookView(url="https://example.com/hook", events=["completed"]),
    )
    body = signing.event_body(EventType.completed, now_ms(), view)
    return body, signing.headers(signing.secret_key(secret), "msg_1", at, body)


def test_an_event_signed_by_the_notifier_verifies_and_reads_as_a_job() -> None:
    secret = new_secret()
    body, headers = delivery(secret, int(time.time()))
    event = dlpipe.verify_webhook(body, headers, secret)
    assert event.type is EventType.completed and isinstance(event.data, dlpipe.JobView)
    assert event.data.id == "abc" and event.data.metadata == {"who": "é"}
    upper = {k.upper(): v for k, v in headers.items()}  # header names in any case
    assert dlpipe.verify_webhook(body.decode(), upper, secret).data.id == "abc"


def test_the_standard_webhooks_library_agrees() -> None:
    secret = new_secret()
    body, headers = delivery(secret, int(time.time()))
    Webhook(secret).verify(body, headers)  # theirs accepts ours
    now = int(time.time())
    theirs = Webhook(secret).sign("msg_2", signing.ms_to_datetime(now * 1000), body.decode())
    dlpipe.verify_webhook(
        body, {"webhook-id": "msg_2", "webhook-timestamp": str(now), "webhook-signature": theirs}, secret
    )


@pytest.mark.parametrize("change", ["body", "id", "secret", "signature", "missing"])
def test_anything_changed_fails(change: str) -> None:
    secret = new_secret()
    body, headers = delivery(secret, int(time.time()))
    if change == "body":
        body = body.replace(b"succeeded", b"failed")
    elif change == "id":
        headers["webhook-id"] = "msg_other"
    elif change == "secret":
        secret = new_secret()
    elif change == "signature":
        headers["webhook-signature"] = "v1," + "A" * 44
    else:
        del headers["webhook-signature"]
    with pytest.raises(dlpipe.WebhookVerificationError):
        dlpipe.verify_webhook(body, headers, secret)


def test_a_replay_with_its_old_timestamp_fails_and_a_fresh_one_passes() -> None:
    secret = new_secret()
    now = int(time.time())
    old_body, old_headers = delivery(secret, now - 301)  # captured more than 5 minutes ago
    with pytest.raises(dlpipe.WebhookVerificationError, match="too old"):
        dlpipe.verify_webhook(old_body, old_headers, secret)
    with pytest.raises(dlpipe.WebhookVerificationError):  # a new timestamp breaks the signature
        dlpipe.verify_webhook(old_body, {**old_headers, "webhook-timestamp": str(now)}, secret)
    future_body, future_headers = delivery(secret, now + 301)
    with pytest.raises(dlpipe.WebhookVerificationError, match="future"):
        dlpipe.verify_webhook(future_body, future_headers, secret)
    body, headers = delivery(secret, now - 299)
    dlpipe.verify_webhook(body, headers, secret)
    assert dlpipe.verify_webhook(old_body, old_headers, secret, tolerance_s=600).data.id == "abc"


def test_one_of_several_signatures_may_match() -> None:
    secret = new_secret()
    body, headers = delivery(secret, int(time.time()))
    headers["webhook-signature"] = "v1,bm9wZQ== " + headers["webhook-signature"]
    assert dlpipe.verify_webhook(body, headers, secret).data.id == "abc"
