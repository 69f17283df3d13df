"""The `wait` preference of a `Prefer` header (RFC 7240), as the submit route reads it."""

from __future__ import annotations

import pytest

from services.api.waiters import parse_prefer_wait


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("wait=10", 10.0),
        ("WAIT = 2.5", 2.5),
        ("respond-async, wait=5", 5.0),
        ('wait="7"', 7.0),
        ("wait=5; foo=bar", 5.0),
        ("return=minimal", None),
        ("wait=soon", None),
        ("wait=-1", None),
        ("wait=nan", None),
        ("wait=inf", None),
        ("wait=0", 0.0),
        ("wait=600", 60.0),  # cut to the limit
    ],
)
def test_prefer_wait(header: str | None, expected: float | None) -> None:
    assert parse_prefer_wait(header, max_wait_s=60.0) == expected
