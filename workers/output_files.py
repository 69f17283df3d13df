"""The files of a final result, lifted out of it for storing (shared/files.py says what they are).

Results.complete_one (workers/store/results.py) calls `lift` on a pipeline's final result before recording it: each
OutputFile in the result's `files` list is checked (name, size, content type), encoded as
stored, and replaced by its description; COMPLETE_STAGE stores the files in the same step
that records the output (ARGV 6 and 7, unused for a final result otherwise: the manifest and
the files' bytes). A result that names a file it did not give, or gives a bad one, fails
its item with the reason instead (FileError).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared import files
from shared.files import DEFAULT_MAX_FILE_BYTES, FILES_FIELD, MAX_FILES_PER_ITEM, FileError, OutputFile


@dataclass(frozen=True)
class Lifted:
    """A final result with its files taken out: `result` (JSON: each file described), the
    manifest COMPLETE_STAGE reads (`<field> <stored size>` pairs, space-separated; '' when there
    is no file) and the stored files' bytes, concatenated in the manifest's order."""

    result: Any
    manifest: str = ""
    payload: bytes = b""
    stored_bytes: int = 0


def _named(entry: Any) -> str:
    """What a `files` entry that is not an OutputFile calls its file, for the error."""
    if isinstance(entry, dict) and "name" in entry:
        entry = entry["name"]
    return repr(entry)[:80] if isinstance(entry, str) else f"a {type(entry).__name__}"


def lift(value: Any, *, job_id: str, index: int, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> Lifted:
    """The result with its files lifted out; the value as it is when it gives none (not a
    dict, or no `files`). FileError (the reason the item fails) for a `files` that is not a
    list, an entry that is not an OutputFile (a name, a description: a file it did not write),
    more than MAX_FILES_PER_ITEM files, a bad or repeated name, bytes that are not bytes, a file
    over `max_bytes` (DLPIPE_MAX_OUTPUT_FILE_BYTES), a bad content type."""
    if not isinstance(value, dict) or FILES_FIELD not in value:
        return Lifted(value)
    entries = value[FILES_FIELD]
    if not isinstance(entries, (list, tuple)):
        raise FileError(f"its result's `files` is a {type(entries).__name__}, not a list of OutputFile")
    if len(entries) > MAX_FILES_PER_ITEM:
        raise FileError(
            f"its result gives {len(entries)} files, over the {MAX_FILES_PER_ITEM} an output may hold"
        )
    described, manifest, chunks, seen = [], [], [], set()
    for entry in entries:
        if not isinstance(entry, OutputFile):
            raise FileError(
                f"its result names the file {_named(entry)} but did not write it (a stage gives a "
                "file as an OutputFile in its result's `files`)"
            )
        name = files.check_name(entry.name)
        if name in seen:
            raise FileError(f"its result gives the file {name!r} twice")
        seen.add(name)
        if not isinstance(entry.data, (bytes, bytearray, memoryview)):
            raise FileError(f"file {name!r}: its data is a {type(entry.data).__name__}, not bytes")
        data = bytes(entry.data)
        if len(data) > max_bytes:
            raise FileError(
                f"file {name!r} is {len(data)} bytes, over the {max_bytes}-byte cap on an output "
                "file (DLPIPE_MAX_OUTPUT_FILE_BYTES)"
            )
        try:
            given = entry.content_type
            content_type = files.sniff(data) if given is None else files.check_content_type(given)
        except FileError as exc:
            raise FileError(f"file {name!r}: {exc}") from None
        stored = files.encode(content_type, data)
        field = files.field(index, name)
        manifest.append(f"{field} {len(stored)}")
        chunks.append(stored)
        described.append(
            {
                "name": name,
                "content_type": content_type,
                "size": len(data),
                "url": files.url(job_id, index, name),
            }
        )
    payload = b"".join(chunks)
    return Lifted({**value, FILES_FIELD: described}, " ".join(manifest), payload, len(payload))
