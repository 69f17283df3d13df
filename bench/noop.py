"""The no-op pipeline of the bench's `api` turn: the API alone accepting jobs (no worker runs).

Its pipelines file, bench/noop_pipelines.yaml, has one text pipeline of one CPU stage, this
module's `passthrough`; the turn starts only `dlpipe api`, so the stage never runs: what is
measured is what the API costs to validate, admit, write and answer a job.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

PIPELINES_FILE = Path(__file__).resolve().parent / "noop_pipelines.yaml"
PIPELINE = "noop"
BODY = b'{"inputs": [{"text": "hello"}]}'


def passthrough(value: Any) -> Any:
    return value
