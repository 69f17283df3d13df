"""The job-level fields of a request, whatever its input kind: `webhook`, `webhook_events`,
`metadata`, `timeout_s` and `priority`, and the multipart forms of `webhook_events`, `timeout_s`
and `priority`."""

from __future__ import annotations

import json
import math
from typing import Any
from urllib.parse import urlsplit

from services.api import formats
from services.api.inputs.common import (
    MAX_METADATA_BYTES,
    MAX_METADATA_DEPTH,
    PRIORITY_FIELD,
    TIMEOUT_FIELD,
    WEBHOOK_EVENTS_FIELD,
    Limits,
    check_http_url,
    invalid,
)
from shared import netguard
from shared.errors import shown
from shared.messages import WEBHOOK_EVENT_NAMES
from shared.priority import DEFAULT as DEFAULT_PRIORITY
from shared.priority import NAMES as PRIORITY_NAMES
from shared.priority import Priority


def check_webhook(value: Any, field: str = "webhook", *, allow_private: bool = False) -> str | None:
    """An http(s) URL. A host that is an IP address in any spelling (`127.1`, `0x7f000001`,
    `[::ffff:10.0.0.1]`) or `localhost` is checked here against the SSRF guard; names are
    resolved and checked by the notifier at each attempt."""
    if value is None or value == "":
        return None
    url = check_http_url(value, field, formats.MAX_WEBHOOK_CHARS)
    host = urlsplit(url).hostname or ""
    if allow_private:
        return url
    if host == "localhost" or host.endswith(".localhost"):
        allow = f"{WEBHOOK_POLICY.override}=true allows it"
        raise invalid(field, f"{host} is a loopback name, which is refused ({allow})")
    try:
        literal = netguard.parse_literal(host)
        if literal is not None:
            netguard.check_address(literal, host, WEBHOOK_POLICY)
    except netguard.AddressRefused as exc:
        raise invalid(field, str(exc)) from None
    except ValueError as exc:
        raise invalid(field, str(exc)) from None
    return url


WEBHOOK_POLICY = netguard.AddressPolicy(override="DLPIPE_WEBHOOK_ALLOW_PRIVATE")


def check_webhook_events(value: Any, webhook: str | None, field: str = WEBHOOK_EVENTS_FIELD) -> list[str]:
    """`webhook_events`: a list of "started", "progress", "completed"; None: the default
    (["completed"], stored as an empty list here). Needs a webhook."""
    if value is None:
        return []
    if not isinstance(value, list) or not value:
        raise invalid(field, f"must be a non-empty list of {', '.join(WEBHOOK_EVENT_NAMES)}")
    for index, name in enumerate(value):
        if name not in WEBHOOK_EVENT_NAMES:
            choices = ", ".join(WEBHOOK_EVENT_NAMES)
            raise invalid(f"{field}[{index}]", f"{shown(name)} is not an event (choose from {choices})")
    if webhook is None:
        raise invalid(field, "given without a webhook")
    return [name for name in WEBHOOK_EVENT_NAMES if name in value]


def webhook_events_from_texts(
    texts: list[str], webhook: str | None, field: str = WEBHOOK_EVENTS_FIELD
) -> list[str]:
    """`webhook_events` of a multipart request: one field of names separated by commas
    (formats.WEBHOOK_EVENTS_TEXT: "started, completed"), or the field repeated; none: the default."""
    if not texts:
        return []
    names = [part.strip() for text in texts for part in text.split(",") if part.strip()]
    events = check_webhook_events(names, webhook, field)
    for text in texts:
        if not formats.matches(formats.WEBHOOK_EVENTS_TEXT, text):
            raise invalid(field, f"event names separated by commas and spaces only, got {shown(text)}")
    return events


def check_metadata(value: Any, field: str = "metadata") -> dict[str, Any] | None:
    """A JSON object of at most MAX_METADATA_BYTES (as compact JSON) and MAX_METADATA_DEPTH levels
    of nesting: it is stored with the job and sent back in every answer and webhook as it came.
    (NaN, Infinity and invalid Unicode never get this far: jsonbody.load_json refuses them.)"""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise invalid(field, "must be a JSON object")
    if _depth(value) > MAX_METADATA_DEPTH:
        raise invalid(field, f"nested more than {MAX_METADATA_DEPTH} levels deep")
    if len(json.dumps(value, separators=(",", ":"))) > MAX_METADATA_BYTES:
        raise invalid(field, f"larger than {MAX_METADATA_BYTES} bytes as JSON")
    return value


def _depth(value: Any) -> int:
    """Levels of objects and arrays in `value` (an object of scalars: 1), without recursion."""
    deepest, level = 0, [(value, 1)]
    while level:
        item, depth = level.pop()
        members = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if members is None:
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_METADATA_DEPTH:
            return deepest
        level.extend((member, depth + 1) for member in members)
    return deepest


def check_timeout(value: Any, limits: Limits, field: str = TIMEOUT_FIELD) -> float | None:
    """`timeout_s` of a JSON request: a number of seconds (> 0, at most the job TTL) after which
    the job's unfinished items fail as expired; null or absent: no deadline."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise invalid(field, "must be a number of seconds")
    if not math.isfinite(value) or value <= 0:
        raise invalid(field, f"must be more than 0 seconds, got {value}")
    if value > limits.max_timeout_s:
        raise invalid(field, f"at most {limits.max_timeout_s:g} seconds (the job TTL), got {value:g}")
    return float(value)


def timeout_from_text(text: str | None, limits: Limits, field: str = TIMEOUT_FIELD) -> float | None:
    """`timeout_s` of a multipart request: a number as text (formats.NUMBER_TEXT); empty or
    absent: no deadline."""
    if text is None or text == "":
        return None
    if not formats.matches(formats.NUMBER_TEXT, text):
        raise invalid(field, f"must be a number of seconds, got {shown(text)}")
    return check_timeout(float(text), limits, field)


def check_priority(value: Any, field: str = PRIORITY_FIELD) -> Priority:
    """`priority`: "high", "normal" or "low"; null, absent (or, in a form, empty): normal."""
    if value is None or value == "":
        return DEFAULT_PRIORITY
    if not isinstance(value, str) or value not in PRIORITY_NAMES:
        raise invalid(field, f"{shown(value)} is not a priority (choose from {', '.join(PRIORITY_NAMES)})")
    return Priority(value)
