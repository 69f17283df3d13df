"""`text` inputs: JSON text or an uploaded UTF-8 file, not blank, within the byte limit."""

from __future__ import annotations

from typing import Any

from services.api import formats
from services.api.input_models import TextInput
from services.api.inputs.common import Limits, ParsedInput, invalid


def check_text(text: str, field: str, max_bytes: int) -> str:
    """Text that is not blank (formats.NOT_BLANK) and at most `max_bytes` once UTF-8 encoded."""
    if not formats.matches(formats.NOT_BLANK, text):
        raise invalid(field, "empty text (or only whitespace)")
    if len(text) > max_bytes:  # every character is at least one byte: no need to encode
        raise invalid(field, f"text is larger than {max_bytes} bytes in UTF-8")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:  # JSON allows lone surrogates ("\ud800"); UTF-8 does not
        raise invalid(field, f"not valid Unicode text (lone surrogate at character {exc.start})") from None
    if size > max_bytes:
        raise invalid(field, f"text is larger than {max_bytes} bytes in UTF-8")
    return text


def _text_from_json(item: TextInput, field: str, limits: Limits, room: int) -> list[ParsedInput]:
    return [ParsedInput({"text": check_text(item.text, f"{field}.text", limits.max_input_bytes)})]


def _text_from_file(data: bytes, field: str, limits: Limits) -> dict[str, Any]:
    """An uploaded text file (text/plain): its UTF-8 text, a leading byte-order mark dropped."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise invalid(field, f"not valid UTF-8 text (bad byte at offset {exc.start})") from None
    return {"text": check_text(text, field, limits.max_input_bytes)}
