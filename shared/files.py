"""Files as outputs: what a stage returns to give a file, how a file is stored, how it is named.

A pipeline's final stage may return files beside its JSON: a dict result whose `files` list
holds OutputFile values (a blurred photo, a mask). The worker stores each one with the job
(workers/output_files.py; one hash per job, keys.job_files, expiring with the job's outputs)
and puts its description in the JSON in its place:

    {"name": "blurred.jpg", "content_type": "image/jpeg", "size": 12345,
     "url": "/v1/jobs/<id>/outputs/<index>/files/blurred.jpg"}

`GET /v1/jobs/{id}/outputs/{index}/files/{name}` serves it (services/api/routers/files.py).
A stored file is one string: its content type, a newline, its bytes (`encode` / `decode`).
Nothing here imports more than the standard library: the API and the stage functions share it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# A file's name: a letter or digit first (never `.` or `..`), then letters, digits, `.`, `_`,
# `-`; no slash, no space, no quote: safe in a URL path, a hash field and Content-Disposition.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_NAME = re.compile(NAME_PATTERN)
# type/subtype (RFC 9110 tokens, lower case), optionally `; charset=...`.
_TOKEN = r"[a-z0-9!#$&^_.+-]+"
_CONTENT_TYPE = re.compile(rf"^{_TOKEN}/{_TOKEN}(; ?charset=[A-Za-z0-9._-]+)?$")
MAX_CONTENT_TYPE = 127
DEFAULT_CONTENT_TYPE = "application/octet-stream"
MAX_FILES_PER_ITEM = 32
DEFAULT_MAX_FILE_BYTES = 16 * 1024 * 1024  # DLPIPE_MAX_OUTPUT_FILE_BYTES's default
FILES_FIELD = "files"  # the key of a result's files list

_SIGNATURES = (  # (prefix, content type): what `sniff` recognises
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"%PDF-", "application/pdf"),
)


class FileError(ValueError):
    """A file that cannot be stored or read as it is: the message says why."""


@dataclass(frozen=True)
class OutputFile:
    """A file a pipeline's final stage gives, in its result's `files` list.

    `content_type` None: sniffed from the bytes (JPEG, PNG, GIF, WebP, PDF; else
    application/octet-stream)."""

    name: str
    data: bytes
    content_type: str | None = None


def check_name(name: object) -> str:
    """The name, if it is a safe file name (NAME_PATTERN); FileError otherwise."""
    if not isinstance(name, str) or not _NAME.match(name):
        shown = repr(name)[:80]
        raise FileError(
            f"file name {shown} is not allowed (1-128 letters, digits, '.', '_' or '-', starting "
            "with a letter or digit; no slashes)"
        )
    return name


def check_content_type(content_type: object) -> str:
    """The content type, lower-cased, if it is `type/subtype` (optionally `; charset=...`)."""
    if not isinstance(content_type, str) or len(content_type) > MAX_CONTENT_TYPE:
        shown = repr(content_type)[:80]
        raise FileError(f"content type {shown} is not a string of at most {MAX_CONTENT_TYPE} characters")
    kind, sep, params = content_type.partition(";")
    normal = kind.strip().lower() + (f"; {params.strip()}" if sep else "")
    if not _CONTENT_TYPE.match(normal):
        raise FileError(f"content type {content_type[:80]!r} is not type/subtype")
    return normal


def sniff(data: bytes) -> str:
    """The content type the bytes' first bytes show; application/octet-stream if none."""
    for prefix, content_type in _SIGNATURES:
        if data.startswith(prefix):
            return content_type
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return DEFAULT_CONTENT_TYPE


def encode(content_type: str, data: bytes) -> bytes:
    """A file as stored: its (checked) content type, a newline, its bytes."""
    return check_content_type(content_type).encode("ascii") + b"\n" + bytes(data)


def decode(stored: bytes) -> tuple[str, bytes]:
    """(content type, bytes) of a stored file; FileError if it is not one."""
    head, sep, data = bytes(stored).partition(b"\n")
    if not sep:
        raise FileError("a stored file has no content type")
    try:
        return check_content_type(head.decode("ascii")), data
    except UnicodeDecodeError:
        raise FileError("a stored file's content type is not ASCII") from None


def field(index: int, name: str) -> str:
    """A file's field in its job's files hash (keys.job_files): `<item index>/<name>`."""
    return f"{index}/{name}"


def url(job_id: str, index: int, name: str) -> str:
    """Where the API serves a file (its path)."""
    return f"/v1/jobs/{job_id}/outputs/{index}/files/{name}"
