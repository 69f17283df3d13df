"""The webhook signing secret `dlpipe up` makes when DLPIPE_WEBHOOK_SECRET is not set, kept in
DLPIPE_DATA_DIR (the supervisor gives it to its children; workers/webhooks/signing.py signs with it).
"""

from __future__ import annotations

import base64
import logging
import os
import secrets
import tempfile
from pathlib import Path

from shared.settings import WEBHOOK_SECRET_PREFIX, Settings, check_webhook_secret

log = logging.getLogger(__name__)

SECRET_FILE = "webhook-secret"  # under DLPIPE_DATA_DIR, made by `dlpipe up` when no secret is set


def new_secret() -> str:
    """A fresh secret: `whsec_` + base64 of 32 random bytes."""
    return WEBHOOK_SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


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
