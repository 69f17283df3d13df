"""JSON request bodies: read without letting one request hold the API, parsed strictly.

Reading (`read_json_body`). A body is refused (413) as soon as it passes
DLPIPE_MAX_JSON_BODY_BYTES, or holds more than DLPIPE_MAX_JSON_VALUES values: each chunk's
`[`, `{` and `,` are counted as it arrives (an upper bound on the values: those inside strings
count too), so 63 MB of `[],[],...` is refused after its first megabyte, never parsed. Parsing is
one call that holds the GIL, so the event loop waits for it whatever thread runs it: the two
caps bound that wait (here: about 3 ms per MiB of base64, 0.13 ms per thousand containers).

Parsing (`load_json`). orjson, with the garbage collector paused: with it on, every few hundred
containers built it walks all of them again (10 s instead of 1.4 s for 21M empty lists). The
body must be RFC 8259 JSON in valid Unicode: orjson refuses NaN and Infinity (json would take
them, and they would come back as null, not as sent), lone surrogate escapes (`"\\ud800"`: no
UTF-8 can store or send them back) and nesting deeper than 1024. For its refusals of a body
json can read, the error names the field that holds the culprit.
"""

from __future__ import annotations

import gc
import json
import math
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
from starlette.requests import Request

from services.api.errors import format_loc
from shared.errors import InvalidRequest, PayloadTooLarge


def _too_large(what: str, setting: str) -> PayloadTooLarge:
    return PayloadTooLarge(f"request body {what} ({setting}); send large inputs as multipart/form-data")


async def read_json_body(request: Request, max_bytes: int, max_values: int) -> bytes:
    """The whole body, refused (PayloadTooLarge) the moment it passes either cap."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(f"is {int(declared)} bytes, over {max_bytes}", "DLPIPE_MAX_JSON_BODY_BYTES")
    chunks: list[bytes] = []
    size = values = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise _too_large(f"is over {max_bytes} bytes", "DLPIPE_MAX_JSON_BODY_BYTES")
        values += chunk.count(b"[") + chunk.count(b"{") + chunk.count(b",")
        if values > max_values:
            raise _too_large(
                f"holds more than {max_values} JSON values (every `[`, `{{` and `,` counts)",
                "DLPIPE_MAX_JSON_VALUES",
            )
        chunks.append(chunk)
    return b"".join(chunks)


MAX_DEPTH = 1024  # orjson's nesting limit
_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}:]')


def _top_level_member(raw: bytes | str, position: int) -> str:
    """The key of the top-level member of an object body that holds `position` ("body" if none):
    the prefix's strings and brackets, scanned by a regex (strings skipped whole, in C)."""
    data = raw.encode() if isinstance(raw, str) else raw
    depth, last_key, member = 0, None, "body"
    for token in _TOKENS.finditer(data, 0, position):
        text = token.group()
        if text in (b"{", b"["):
            depth += 1
            if depth == 2 and last_key is not None:
                member = last_key
        elif text in (b"}", b"]"):
            depth -= 1
        elif text == b":":
            pass
        elif depth == 1:
            last_key = text[1:-1].decode("utf-8", "replace")
    return member


_gc_lock = threading.Lock()
_gc_pausers = 0
_gc_was_enabled = False


@contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off for the block (re-entrant across threads: back on, if it
    was on, when the last one leaves)."""
    global _gc_pausers, _gc_was_enabled
    with _gc_lock:
        if _gc_pausers == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_pausers += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pausers -= 1
            if _gc_pausers == 0 and _gc_was_enabled:
                gc.enable()


def load_json(raw: bytes | str, field: str = "body") -> Any:
    """Parse strict JSON (see the module's docstring); InvalidRequest naming the field otherwise."""
    try:
        with gc_paused():
            return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        error = exc
    if error.msg.startswith("depth limit"):  # json's own parser would recurse as deep: do not ask it
        member = _top_level_member(raw, error.pos) if field == "body" else field
        raise InvalidRequest(f"{member}: nested more than {MAX_DEPTH} levels deep", field=member) from None
    # orjson refused it: if json can read it, say which value is not JSON as RFC 8259 has it.
    try:
        with gc_paused():
            lenient = json.loads(raw)
    except RecursionError:
        raise InvalidRequest(f"{field}: nested too deeply", field=field) from None
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest(f"{field}: not valid JSON ({error})", field=field) from None
    where, what = _first_unstorable(lenient)
    path = format_loc(["body", *where], prefix="" if field == "body" else field)
    raise InvalidRequest(f"{path}: {what}", field=path)


def _first_unstorable(value: Any) -> tuple[list[Any], str]:
    """Where (a loc path) the first value orjson refuses sits, and why."""
    stack: list[tuple[list[Any], Any]] = [([], value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return where, "not a finite number (JSON has no NaN or Infinity)"
        if isinstance(item, str) and not _is_unicode(item):
            return where, "not valid Unicode (a lone surrogate escape such as \\ud800)"
        if isinstance(item, dict):
            for key, member in reversed(list(item.items())):
                if not _is_unicode(key):
                    return where, "holds a key that is not valid Unicode (a lone surrogate escape)"
                stack.append(([*where, key], member))
        elif isinstance(item, list):
            stack.extend(([*where, n], member) for n, member in reversed(list(enumerate(item))))
    return [], "not valid JSON"


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
