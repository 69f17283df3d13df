"""`dlpipe submit`'s inputs: the files its PATH arguments name, grouped into jobs, each job's
Idempotency-Key.

Jobs are made the same way on every run with the same inputs and flags: the files in name order,
`per_job` at a time (fewer when they would pass `max_job_bytes`). A rerun therefore sends a job
that was sent before with the same key, and the API answers it with the job it already made:
no second job. (Files added to a folder since shift the groups after them: those are new jobs.)
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# What a folder contributes, by the pipeline's input kind (a file named on the command line is
# always sent). Hidden files and folders (.DS_Store, .git) are never taken from a folder.
EXTENSIONS: dict[str, frozenset[str]] = {
    "image": frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}),
    "video": frozenset({".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v"}),
    "text": frozenset({".txt"}),
}
KEY_PREFIX = "cli1-"


class InputError(Exception):
    """A PATH that names nothing usable (exit 2)."""


@dataclass(frozen=True)
class Source:
    name: str  # as the results file and the job's output `source` show it
    path: Path
    size: int


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def _folder_files(folder: Path, recursive: bool, extensions: frozenset[str] | None) -> Iterable[Path]:
    found = folder.rglob("*") if recursive else folder.iterdir()
    for path in found:
        if _hidden(path.relative_to(folder)) or not path.is_file():
            continue
        if extensions is None or path.suffix.lower() in extensions:
            yield path


def discover(args: Sequence[str], *, recursive: bool, extensions: frozenset[str] | None) -> list[Source]:
    """Every file the arguments name, in order (a folder's files sorted by name), each once."""
    sources: list[Source] = []
    seen: set[Path] = set()
    for arg in args:
        top = Path(arg)
        if top.is_file():
            paths = [top]
        elif top.is_dir():
            paths = sorted(_folder_files(top, recursive, extensions), key=lambda p: p.as_posix())
            if not paths and not recursive and any(p.is_dir() for p in top.iterdir()):
                raise InputError(f"{arg}: no input files here (it has folders: --recursive goes into them)")
        else:
            raise InputError(f"{arg}: no such file or folder")
        for path in paths:
            real = path.resolve()
            if real in seen:
                continue
            seen.add(real)
            sources.append(Source(path.as_posix(), path, os.stat(path).st_size))
    return sources


def group(sources: Sequence[Source], per_job: int, max_job_bytes: int) -> list[list[Source]]:
    """Consecutive runs of at most `per_job` sources (and about `max_job_bytes`; a larger file
    goes alone)."""
    jobs: list[list[Source]] = []
    current: list[Source] = []
    size = 0
    for source in sources:
        if current and (len(current) >= per_job or size + source.size > max_job_bytes):
            jobs.append(current)
            current, size = [], 0
        current.append(source)
        size += source.size
    if current:
        jobs.append(current)
    return jobs


def job_key(pipeline: str, fields: dict[str, Any], files: Sequence[tuple[str, bytes]]) -> str:
    """The Idempotency-Key of one job: SHA-256 of the pipeline, the job's fields (webhook,
    metadata, timeout) and each file's name and content digest. Same request, same key."""
    digest = hashlib.sha256(b"dlpipe submit\0")
    digest.update(pipeline.encode() + b"\0")
    digest.update(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode() + b"\0")
    for name, content in files:
        digest.update(name.encode("utf-8", "surrogateescape") + b"\0" + hashlib.sha256(content).digest())
    return KEY_PREFIX + digest.hexdigest()
