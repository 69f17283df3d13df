"""services/api/formats.py: each pattern reads the same in Python and in JSON Schema (the
validator schemathesis and clients use), and the API's checks accept exactly what the schema's
string rules admit."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import jsonschema_rs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.api import admission, formats
from services.api.inputs import Limits, check_http_url, check_text, check_webhook, decode_base64
from services.api.inputs.fields import timeout_from_text, webhook_events_from_texts
from shared.errors import InvalidRequest

PATTERNS = [
    "NOT_BLANK",
    "DATA_PATH",
    "BASE64",
    "HTTP_URL",
    "HTTP_URL_NO_CREDENTIALS",
    "WEBHOOK_EVENTS_TEXT",
    "NUMBER_TEXT",
    "IDEMPOTENCY_KEY",
]
WHITESPACE = " \t\n\r\x0b\x0c\x1c\x1f\x85\xa0\u1680\u2000\u2028\u3000\ufeff"
CHECK = settings(max_examples=100, database=None, derandomize=True, deadline=None)
LIMITS = Limits(max_inputs=10, max_input_bytes=10**6, max_timeout_s=86400)


@cache
def _validator(schema_json: str) -> Any:
    return jsonschema_rs.validator_for({"type": "string", **json.loads(schema_json)}, validate_formats=True)


def schema_admits(schema: dict[str, Any], value: str) -> bool:
    return bool(_validator(json.dumps(schema, sort_keys=True)).is_valid(value))


def accepts(check: Any, *args: Any, **kwargs: Any) -> bool:
    try:
        check(*args, **kwargs)
    except InvalidRequest:
        return False
    return True


def near(pattern: str, alphabet: str) -> st.SearchStrategy[str]:
    """Strings that match `pattern`, and strings of its alphabet that mostly do not."""
    return st.one_of(st.from_regex(pattern, fullmatch=True), st.text(alphabet=alphabet, max_size=24))


@pytest.mark.parametrize("name", PATTERNS)
@CHECK
@given(data=st.data())
def test_a_pattern_matches_the_same_in_python_and_json_schema(name: str, data: st.DataObject) -> None:
    pattern = getattr(formats, name)
    value = data.draw(near(pattern, "aZ09+/=:@._-%,[] " + WHITESPACE + "\x00é"))
    assert formats.matches(pattern, value) == schema_admits({"pattern": pattern}, value), repr(value)


@CHECK
@given(near(formats.BASE64, "AZaz09+/=\n :;,data/image"))
def test_base64_is_accepted_exactly_when_the_pattern_admits_it(value: str) -> None:
    assert accepts(decode_base64, value, "f", 10**6) == formats.matches(formats.BASE64, value), repr(value)


@CHECK
@given(st.text(alphabet="a." + WHITESPACE, max_size=6))
def test_text_is_accepted_exactly_when_it_is_not_blank(value: str) -> None:
    assert accepts(check_text, value, "f", 10**6) == formats.matches(formats.NOT_BLANK, value), repr(value)


URL_ALPHABET = "hts:/@[]%?#.:0123456789aAfFz-~!$&'()*+,;= é\t"


def urls(pattern: str) -> st.SearchStrategy[str]:
    """URLs the pattern admits, and near misses."""
    after_scheme = st.text(alphabet=URL_ALPHABET, max_size=20).map("http://".__add__)
    return st.one_of(near(pattern, URL_ALPHABET), after_scheme).filter(bool)


def test_an_empty_webhook_is_none_as_its_schema_says() -> None:
    assert check_webhook("") is None and check_webhook(None) is None


@CHECK
@given(urls(formats.HTTP_URL))
def test_webhook_urls_are_accepted_exactly_when_the_schema_admits_them(value: str) -> None:
    schema = {"format": "uri", "pattern": formats.HTTP_URL, "maxLength": formats.MAX_WEBHOOK_CHARS}
    assert accepts(check_webhook, value, allow_private=True) == schema_admits(schema, value), repr(value)


@CHECK
@given(urls(formats.HTTP_URL_NO_CREDENTIALS))
def test_image_urls_are_accepted_exactly_when_the_schema_admits_them(value: str) -> None:
    schema = {"format": "uri", "pattern": formats.HTTP_URL_NO_CREDENTIALS, "maxLength": formats.MAX_URL_CHARS}
    api = accepts(check_http_url, value, "f", formats.MAX_URL_CHARS, credentials=False)
    assert api == schema_admits(schema, value), repr(value)


@CHECK
@given(near(formats.WEBHOOK_EVENTS_TEXT, "startedprogresscompleted ,\t"))
def test_multipart_webhook_events_are_accepted_exactly_when_the_pattern_admits_them(value: str) -> None:
    api = accepts(webhook_events_from_texts, [value], "https://example.com/h")
    assert api == formats.matches(formats.WEBHOOK_EVENTS_TEXT, value), repr(value)


@CHECK
@given(
    st.one_of(st.floats(min_value=1e-9, max_value=86400).map(str), near(formats.NUMBER_TEXT, "0129.eE+-_ x"))
)
def test_a_multipart_timeout_is_accepted_exactly_when_it_is_a_number_in_range(value: str) -> None:
    in_range = value == "" or formats.matches(formats.NUMBER_TEXT, value) and 0 < float(value) <= 86400
    assert accepts(timeout_from_text, value, LIMITS) == in_range, repr(value)  # empty: no deadline


@CHECK
@given(near(formats.IDEMPOTENCY_KEY, "a~ \x7f\x1fé"))
def test_idempotency_keys_are_accepted_exactly_when_the_pattern_admits_them(value: str) -> None:
    assert accepts(admission.check_key, value) == formats.matches(formats.IDEMPOTENCY_KEY, value), repr(value)
