"""Reading a multipart/form-data body: Starlette's parser, made strict where it is lenient.

Text fields, field names and file names must decode in the body's charset (UTF-8 unless the
Content-Type names another): Starlette falls back to latin-1 silently, so bytes a JSON body
would have refused with a 422 came in as other text. Here they get the same 422, naming the
field. (python-multipart caps each part's headers itself: 8 lines of 4 KiB.)

`form_digest` is the SHA-256 of the form as parsed, the fingerprint of an Idempotency-Key:
its text fields by name (any order), then its files in order, each as its field, file name and
the SHA-256 of its bytes; the boundary and the framing never count.
"""

from __future__ import annotations

import hashlib

from python_multipart.multipart import parse_options_header
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from services.api.inputs.common import MAX_METADATA_BYTES, MULTIPART_FILES_FIELD, Limits, invalid
from shared.errors import shown

MAX_FIELDS = 16  # text fields of one form (webhook, metadata, ...: a handful are accepted)


class StrictMultiPartParser(MultiPartParser):
    """Starlette's MultiPartParser with strict text decoding and capped part headers."""

    def _strict(self, data: bytes | bytearray, what: str) -> str:
        try:
            return bytes(data).decode(self._charset or "utf-8")
        except (UnicodeDecodeError, LookupError):
            raise invalid(what, f"not valid {self._charset or 'utf-8'} text") from None

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._current_part.content_disposition)
        name = self._strict(options.get(b"name", b""), "body")
        if b"filename" in options:
            self._strict(options[b"filename"], name or "body")
        super().on_headers_finished()

    def on_part_end(self) -> None:
        if self._current_part.file is None:  # a text field: Starlette would fall back to latin-1
            self._strict(self._current_part.data, self._current_part.field_name or "body")
        super().on_part_end()


async def read_form(request: Request, limits: Limits) -> FormData:
    """The request's form, strictly parsed, with at most `limits.max_inputs` files."""
    parser = StrictMultiPartParser(
        request.headers,
        request.stream(),
        max_files=limits.max_inputs + 1,
        max_fields=MAX_FIELDS,
        max_part_size=MAX_METADATA_BYTES + 1024,
    )
    try:
        return await parser.parse()
    except (MultiPartException, HTTPException) as exc:
        message = getattr(exc, "message", None) or getattr(exc, "detail", None) or str(exc)
        if exc.__cause__ is not None:  # python-multipart's own reason ("Maximum header size exceeded")
            message = f"{message} ({exc.__cause__})"
        if "Too many files" in message:
            raise invalid(MULTIPART_FILES_FIELD, f"at most {limits.max_inputs} inputs per job") from None
        raise invalid("body", f"malformed multipart body: {message}") from None
    except KeyError as exc:  # Starlette: no Content-Type parameters where it needs them
        raise invalid("body", f"malformed multipart body: no {shown(str(exc))}") from None


def form_digest(texts: list[tuple[str, str]], files: list[tuple[str, str | None, bytes]]) -> str:
    """The fingerprint of a form (see the module's docstring): `texts` as (name, value), `files`
    as (field, file name, SHA-256 digest of the content)."""
    digest = hashlib.sha256(b"multipart\0")
    for name, value in sorted(texts, key=lambda pair: pair[0]):  # stable: repeated names keep their order
        digest.update(b"t\0%s\0%s\0" % (name.encode(), value.encode()))
    for name, filename, content_digest in files:
        digest.update(b"f\0%s\0%s\0%s\0" % (name.encode(), (filename or "").encode(), content_digest))
    return digest.hexdigest()
