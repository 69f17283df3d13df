"""services/api/inputs.py on its own: base64, limits, webhooks, and one format per input kind."""

from __future__ import annotations

import base64

import pytest

from services.api.errors import describe_validation_errors, format_loc
from services.api.inputs import INPUT_FORMATS, check_webhook, decode_base64
from shared.errors import InvalidRequest
from shared.pipeline_spec import InputKind


def test_every_input_kind_has_a_format() -> None:
    assert set(INPUT_FORMATS) == set(InputKind)


@pytest.mark.parametrize("size", [1, 2, 3, 10])
def test_base64_up_to_the_limit_is_accepted_and_one_byte_more_is_not(size: int) -> None:
    exact = base64.b64encode(b"a" * size).decode()
    assert decode_base64(exact, "f", size) == b"a" * size
    over = base64.b64encode(b"a" * (size + 1)).decode()
    with pytest.raises(InvalidRequest, match=f"larger than {size} bytes") as info:
        decode_base64(over, "f", size)
    assert info.value.field == "f"


@pytest.mark.parametrize(
    "prefix", ["data:image/jpeg;base64,", "data:image/svg+xml;base64,", "DATA:image/png;charset=x;base64,"]
)
def test_data_url_prefixes_are_stripped(prefix: str) -> None:
    assert decode_base64(prefix + base64.b64encode(b"img").decode(), "f", 100) == b"img"


@pytest.mark.parametrize("text", ["abc", "ab$=", "YWJj\n", "data:text/plain,YWJj", "YW Jj"])
def test_invalid_base64_is_rejected_naming_the_field(text: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        decode_base64(text, "inputs[4].image_base64", 100)
    assert str(info.value) == "inputs[4].image_base64: not valid base64"
    assert info.value.field == "inputs[4].image_base64"


@pytest.mark.parametrize(
    "url",
    ["http://example.com/x", "https://93.184.216.34:8443/hook?a=1", "https://[2606:4700::1]/h", None, ""],
)
def test_http_webhooks_are_accepted(url: str | None) -> None:
    assert check_webhook(url) == (url or None)


@pytest.mark.parametrize("url", ["https://10.0.0.1:8443/hook?a=1", "https://[::1]/h", "http://localhost:9/h"])
def test_internal_webhooks_are_accepted_when_private_addresses_are_allowed(url: str) -> None:
    assert check_webhook(url, allow_private=True) == url


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com",
        "example.com/hook",
        "javascript:alert(1)",
        "http://",
        "https://h:99999/",
        "https://" + "a" * 3000 + ".com",
        ["x"],
    ],
)
def test_other_webhooks_are_rejected(url: object) -> None:
    with pytest.raises(InvalidRequest) as info:
        check_webhook(url)
    assert info.value.field == "webhook" and str(info.value).startswith("webhook: ")


def test_locations_read_like_the_request() -> None:
    assert format_loc(("body", "inputs", 2, "image_base64")) == "inputs[2].image_base64"
    assert format_loc(("query", "limit")) == "limit"
    assert format_loc(("image_base64",), prefix="inputs[0]") == "inputs[0].image_base64"
    assert format_loc(("body",)) == "body"
    message, field = describe_validation_errors(
        [{"loc": ("body", "a"), "msg": "Field required"}, {"loc": ("body", "b", 0), "msg": "Bad"}]
    )
    assert message == "a: field required; b[0]: bad" and field == "a"
