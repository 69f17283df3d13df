"""The string rules the API checks and its OpenAPI document states, one regex each.

Each pattern is written in the subset that Python's `re` and ECMA-262 (JSON Schema's
`pattern`) read the same way: explicit character classes (no `\\s`, `\\w`, `\\d`, whose
members differ, but for `[\\s\\S]`: any character in both), `\\uXXXX` escapes, no flags. The
API matches a whole value with `matches()`; the schema gives the same text as `pattern`, so a
value is valid for both or for neither (tests/unit/test_api_formats.py checks both).
"""

from __future__ import annotations

import re
from functools import cache

MAX_URL_CHARS = 2048  # an `image_url`
MAX_WEBHOOK_CHARS = 2048

# Whitespace: Python's str.isspace() and ECMA-262's \s together (a value made only of these is blank).
WHITESPACE = (
    "\\u0009-\\u000d\\u001c-\\u0020\\u0085\\u00a0\\u1680\\u2000-\\u200a"
    "\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff"
)
# Text with at least one character that is not whitespace.
NOT_BLANK = f"^[\\s\\S]*[^{WHITESPACE}][\\s\\S]*$"
# A path under the data root: not blank, no NUL character.
DATA_PATH = f"^[^\\u0000]*[^\\u0000{WHITESPACE}][^\\u0000]*$"

# Strict base64 (the standard alphabet, padded, no line breaks), after an optional data URL prefix.
_TOKEN = "[A-Za-z0-9_.+-]+"
_DATA_URL = f"[Dd][Aa][Tt][Aa]:{_TOKEN}/{_TOKEN}(?:;{_TOKEN}={_TOKEN})*;[Bb][Aa][Ss][Ee]64,"
_B64 = "[A-Za-z0-9+/]"
BASE64 = f"^(?:{_DATA_URL})?(?:{_B64}{{4}})*(?:{_B64}{{2}}==|{_B64}{{3}}=|{_B64}{{4}})$"
DATA_URL_PREFIX = f"^{_DATA_URL}"

# An absolute http(s) URL in RFC 3986 characters (ASCII; others percent-encoded) with a host and
# at most a valid port; the scheme in any case.
_CHAR = "A-Za-z0-9._~!$&'()*+,;=\\-"  # unreserved and sub-delims
_PCT = "%[0-9A-Fa-f]{2}"
_HOST = f"(?:\\[[0-9A-Fa-f:.]+\\]|(?:[{_CHAR}]|{_PCT})+)"
_PORT = "(?::(?:[0-9]{0,4}|[0-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?"
_REST = f"(?:/(?:[{_CHAR}:@/]|{_PCT})*)?(?:\\?(?:[{_CHAR}:@/?]|{_PCT})*)?(?:#(?:[{_CHAR}:@/?]|{_PCT})*)?"
_USERINFO = f"(?:(?:[{_CHAR}:]|{_PCT})*@)?"
HTTP_URL = f"^[Hh][Tt][Tt][Pp][Ss]?://{_USERINFO}{_HOST}{_PORT}{_REST}$"
HTTP_URL_NO_CREDENTIALS = f"^[Hh][Tt][Tt][Pp][Ss]?://{_HOST}{_PORT}{_REST}$"

# The webhook events of a multipart request: names separated by commas (spaces around them allowed).
_EVENT = "(?:started|progress|completed)"
WEBHOOK_EVENTS_TEXT = f"^[ ,]*{_EVENT}(?: *,[ ,]*{_EVENT})*[ ,]*$"
EVENT_NAME = re.compile(_EVENT)

# A number as the text of a multipart field (as JSON writes numbers, leading zeros allowed).
NUMBER_TEXT = "^-?[0-9]+(?:\\.[0-9]+)?(?:[eE][+-]?[0-9]+)?$"

# An Idempotency-Key: 1 to 255 printable ASCII characters, not starting with a space.
IDEMPOTENCY_KEY = "^[\\u0021-\\u007e][\\u0020-\\u007e]{0,254}$"


@cache
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def matches(pattern: str, value: str) -> bool:
    """Whether the whole of `value` matches `pattern` (one of the patterns above)."""
    return _compiled(pattern).fullmatch(value) is not None
