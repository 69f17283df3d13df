"""Who may call: API keys (DLPIPE_API_KEYS) in `Authorization: Bearer <key>`.

With keys set, every /v1 route needs one of them (401 with `WWW-Authenticate: Bearer`
otherwise); /healthz, /readyz, /docs and /openapi.json stay open. Unset: no authentication.
Keys are kept as SHA-256 digests and a presented key is compared, in constant time, with
every one of them (hmac.compare_digest), so timing says nothing about which key is near.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException

from shared.settings import Settings

ANONYMOUS = "anon"

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="apiKey",
    description=(
        "An API key from the server's DLPIPE_API_KEYS, as `Authorization: Bearer <key>`. "
        "Needed on every /v1 route when the server sets keys; unset, no authentication."
    ),
)


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def key_digests(settings: Settings) -> list[bytes]:
    """SHA-256 of each configured key (comma-separated, blanks ignored); empty: no authentication."""
    if settings.api_keys is None:
        return []
    keys = [k.strip() for k in settings.api_keys.get_secret_value().split(",")]
    return [_digest(k) for k in keys if k]


def _refuse(reason: str, error: str | None) -> HTTPException:
    challenge = 'Bearer realm="dlpipe"' + (f', error="{error}"' if error else "")
    return HTTPException(401, reason, headers={"WWW-Authenticate": challenge})


async def require_api_key(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> str:
    """The caller's id (a hash prefix of its key; `anon` without keys), also put on
    request.state.caller; 401 when keys are set and none of them is presented."""
    digests: list[bytes] = request.app.state.api_key_digests
    if not digests:
        request.state.caller = ANONYMOUS
        return ANONYMOUS
    if credentials is None:
        raise _refuse("missing API key: send `Authorization: Bearer <key>`", None)
    presented = _digest(credentials.credentials)
    matched = False
    for digest in digests:  # every one, always: no early exit
        matched |= hmac.compare_digest(presented, digest)
    if not matched:
        raise _refuse("invalid API key", "invalid_token")
    caller = presented.hex()[:16]
    request.state.caller = caller
    return caller


def caller_of(request: Request) -> str:
    """The id require_api_key gave this request (`anon` if it did not run)."""
    return getattr(request.state, "caller", ANONYMOUS)


async def require_api_key_or_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    access_token: Annotated[
        str | None,
        Query(
            max_length=1024,
            description=(
                "The API key, for clients that cannot send headers (EventSource, `<img src>`); "
                "`Authorization: Bearer` wins when both are given."
            ),
        ),
    ] = None,
) -> str:
    """require_api_key, also taking the key from `?access_token=` (the routes browsers load
    directly: job events, kept inputs). The access log shows the query redacted (services/api/server.py)."""
    if credentials is None and access_token:
        credentials = HTTPAuthorizationCredentials(scheme="Bearer", credentials=access_token)
    return await require_api_key(request, credentials)
