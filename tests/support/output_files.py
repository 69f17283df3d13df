"""The `give` test pipeline: one preprocess stage (give_files) that gives output files as the
input's text says, with the workers' cap on a file's size (CAP); and a check that two keys expire
together (a job's files with its outputs)."""

from __future__ import annotations

import io
from typing import Any

from PIL import Image

from shared.files import OutputFile

CAP = 1000  # the workers' DLPIPE_MAX_OUTPUT_FILE_BYTES here


def small_jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 6), (200, 30, 30)).save(out, "JPEG")
    return out.getvalue()


def give_files(inp: dict[str, Any]) -> Any:
    """The test pipeline's one stage: the text says which files to give."""
    text = inp["text"]
    if text == "jpeg":  # content type sniffed
        return {"n": 1, "files": [OutputFile("a.jpg", small_jpeg())]}
    if text == "two":
        return {"files": [OutputFile("a.txt", b"hello\n", "text/plain"), OutputFile("b.bin", b"\x00\n\x01")]}
    if text == "big":
        return {"files": [OutputFile("big.bin", b"x" * (CAP + 1), "application/octet-stream")]}
    if text == "ghost":
        return {"files": ["ghost.jpg"]}
    return {"n": 0}


PIPELINES = """\
pipelines:
  give:
    description: Gives files.
    input: text
    output: {files: "the files"}
    stages:
      - {name: give, kind: preprocess, fn: "tests.support.output_files:give_files"}
"""


def assert_expire_together(client: Any, key: str, other: str) -> None:
    """Both keys expire, set in the same step (read one after the other: within a second)."""
    left, right = client.pttl(key), client.pttl(other)
    assert left > 0 and right > 0 and abs(left - right) < 1000, (left, right)
