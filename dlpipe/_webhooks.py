"""`verify_webhook`: check a webhook dlpipe sent (Standard Webhooks, as workers/webhooks/signing.py
signs it) and read its body."""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Mapping
from datetime import datetime

from pydantic import BaseModel, ValidationError

from dlpipe._errors import WebhookVerificationError
from shared.messages import EventType, JobView

DEFAULT_TOLERANCE_S = 300  # Standard Webhooks' 5 minutes, either way


class WebhookEvent(BaseModel):
    """A webhook's body: the event, when it happened, and the job (as `GET /v1/jobs/{id}`)."""

    type: EventType
    timestamp: datetime
    data: JobView


def verify_webhook(
    body: bytes | str,
    headers: Mapping[str, str],
    secret: str,
    *,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> WebhookEvent:
    """The webhook's event, once its `webhook-signature` is a valid `v1` HMAC-SHA256 (with `secret`,
    the server's `whsec_...` DLPIPE_WEBHOOK_SECRET) of `{webhook-id}.{webhook-timestamp}.{body}`
    and its timestamp is within `tolerance_s` of now. Pass the body exactly as received (bytes).
    An attempt replayed later than the tolerance fails: its old timestamp is signed, so it cannot
    be refreshed without the secret. `webhook-id` stays the same across retries of one event: keep
    the ids you have handled to drop duplicates. Raises WebhookVerificationError."""
    from workers.webhooks.signing import secret_key, sign  # noqa: PLC0415 - the signer's own scheme

    raw = body.encode() if isinstance(body, str) else bytes(body)
    lowered = {str(k).lower(): str(v) for k, v in headers.items()}
    msg_id = lowered.get("webhook-id")
    stamp = lowered.get("webhook-timestamp")
    signatures = lowered.get("webhook-signature")
    if not msg_id or not stamp or not signatures:
        raise WebhookVerificationError("missing webhook-id, webhook-timestamp or webhook-signature header")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise WebhookVerificationError("webhook-timestamp is not a whole number of seconds") from None
    current = time.time() if now is None else now
    if timestamp < current - tolerance_s:
        raise WebhookVerificationError("webhook-timestamp is too old (a replay, or a clock far off)")
    if timestamp > current + tolerance_s:
        raise WebhookVerificationError("webhook-timestamp is too far in the future")
    try:
        key = secret_key(secret)
    except ValueError as exc:
        raise WebhookVerificationError(f"bad secret: {exc}") from None
    expected = sign(key, msg_id, timestamp, raw).encode()
    # Several space-separated `v1,<sig>` entries may come (while a secret is being rotated).
    if not any(hmac.compare_digest(expected, entry.encode()) for entry in signatures.split()):
        raise WebhookVerificationError("no matching signature")
    try:
        return WebhookEvent.model_validate(json.loads(raw))
    except (ValueError, ValidationError) as exc:
        raise WebhookVerificationError(f"signed, but the body is not a dlpipe event: {exc}") from None
