"""The webhook message: its body, and its Standard Webhooks signature (https://www.standardwebhooks.com).

Every attempt carries `webhook-id` (the delivery's id, the same on every retry of one event),
`webhook-timestamp` (this attempt's time, Unix seconds) and `webhook-signature`:
`v1,` + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")), where the key is the base64 after
`whsec_` in DLPIPE_WEBHOOK_SECRET. Receivers verify with any Standard Webhooks library.

The body: {"type": "job.completed", "timestamp": <the event's time, ISO 8601>, "data": <the job,
as GET /v1/jobs/{id} returns it, when the attempt is made>}; `data.webhook` holds only the URL
and the events (not the delivery's own state).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
from typing import Any

from shared.messages import EventType, JobView, ms_to_datetime
from shared.settings import WEBHOOK_SECRET_PREFIX, check_webhook_secret

log = logging.getLogger(__name__)

USER_AGENT = "dlpipe-webhooks/1"


def secret_key(secret: str) -> bytes:
    """The HMAC key a `whsec_...` secret stands for."""
    check_webhook_secret(secret)
    return base64.b64decode(secret[len(WEBHOOK_SECRET_PREFIX) :])


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value: `v1,<base64 HMAC-SHA256 of id.timestamp.body>`."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def headers(key: bytes, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """Every header of one attempt."""
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(key, msg_id, timestamp, body),
    }


def iso(ms: int) -> str:
    """Milliseconds since the epoch as ISO 8601 UTC, like the job's own timestamps."""
    when = ms_to_datetime(ms)
    assert when is not None
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event_body(event: EventType, at_ms: int, view: JobView) -> bytes:
    """The JSON body of one event of one job (compact, UTF-8): the bytes that are signed."""
    data: dict[str, Any] = view.model_dump(mode="json")
    if view.webhook is not None:
        data["webhook"] = {"url": view.webhook.url, "events": list(view.webhook.events)}
    payload = {"type": event.value, "timestamp": iso(at_ms), "data": data}
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
