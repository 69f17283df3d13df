"""`dlpipe submit --out`'s results file: one JSON line per input, written as each ends.

Each job's lines go out in one write, flushed at once, so a kill leaves whole lines (at worst a
torn last one, which the next run cuts off before it appends). A rerun reads the file first and
skips every input already in it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import IO, Any


class ResultsFile:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._out: IO[bytes] | None = None  # unbuffered: a job's lines are one write() call
        self.written = 0

    def load(self) -> dict[str, str]:
        """The sources already in the file and their status (nothing without a file); a torn last
        line is cut off."""
        if self.path is None or not self.path.exists():
            return {}
        raw = self.path.read_bytes()
        if raw and not raw.endswith(b"\n"):
            raw = raw[: raw.rfind(b"\n") + 1]
            with self.path.open("r+b") as f:
                f.truncate(len(raw))
        done: dict[str, str] = {}
        for line in raw.splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get("source"), str):
                done[record["source"]] = str(record.get("status"))
        return done

    def open(self) -> None:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._out = self.path.open("ab", buffering=0)

    def write(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        text = "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in records)
        if self._out is None:  # no --out: standard output
            sys.stdout.write(text)
            sys.stdout.flush()
        else:
            data = memoryview(text.encode("utf-8", "surrogateescape"))
            while data:
                data = data[self._out.write(data) or 0 :]
        self.written += len(records)

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
        self._out = None
