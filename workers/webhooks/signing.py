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
import os
import secrets
import tempfile
from pathlib import Path
from typing import Any

from shared.messages import EventType, JobView, ms_to_datetime
from shared.settings import WEBHOOK_SECRET_PREFIX, Settings, check_webhook_secret

log = logging.getLogger(__name__)

USER_AGENT = "dlpipe-webhooks/1"
SECRET_FILE = "webhook-secret"  # under DLPIPE_DATA_DIR, made by `dlpipe up` when no secret is set


def secret_key(secret: str) -> bytes:
    """The HMAC key a `whsec_...` secret stands for."""
    check_webhook_secret(secret)
    return base64.b64decode(secret[len(WEBHOOK_SECRET_PREFIX) :])


def new_secret() -> str:
    """A fresh secret: `whsec_` + base64 of 32 random bytes."""
    return WEBHOOK_SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


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


def load_or_create_secret(path: Path) -> str:
    """The secret kept in `path`; made (0600, never overwritten) when the file does not exist.

    Two `dlpipe up`s on one data dir may start together: the secret is written whole to a
    file of its own and then linked into place, so a reader never sees a half-written one and
    exactly one of them makes it."""
    if path.exists():
        return read_secret(path)
    secret = new_secret()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(secret + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)
    except FileExistsError:
        return read_secret(path)  # another process linked its own first: use that one
    finally:
        os.unlink(tmp)
    log.warning(
        "DLPIPE_WEBHOOK_SECRET is not set: made a webhook signing secret in %s (give it to the "
        "receivers; set DLPIPE_WEBHOOK_SECRET to choose your own)",
        path.resolve(),
    )
    return secret


def read_secret(path: Path) -> str:
    secret = path.read_text().strip()
    check_webhook_secret(secret)
    return secret


def secret_env(settings: Settings) -> dict[str, str]:
    """For `dlpipe up`'s children: no change when DLPIPE_WEBHOOK_SECRET is set; else the secret
    kept in DLPIPE_DATA_DIR/webhook-secret (made on the first run, reused after)."""
    if settings.webhook_secret is not None:
        return {}
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return {"DLPIPE_WEBHOOK_SECRET": load_or_create_secret(settings.data_dir / SECRET_FILE)}
