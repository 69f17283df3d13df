"""Server-Sent Events, read line by line (the WHATWG rules: `event:`, `data:` lines joined by
newlines, `id:`, comments starting with `:`), and a job's events made typed."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from shared.messages import ItemOutput, JobView, Progress


@dataclass(frozen=True)
class Event:
    """One event of `GET /v1/jobs/{id}/events`. `type` is `progress` (data: Progress), `output`
    (data: ItemOutput, one input's output as it ends) or `completed` (data: the final JobView;
    the stream ends after it). `id` resumes after this event (None on catch-up outputs)."""

    type: str
    data: Any
    id: str | None = None


def typed(kind: str, payload: Any) -> Any:
    if kind == "progress":
        return Progress.model_validate(payload)
    if kind == "output":
        return ItemOutput.model_validate(payload)
    if kind == "completed":
        return JobView.model_validate(payload)
    return payload


class SSEParser:
    """Feed it lines (without their line ends); it returns an Event when a blank line ends one."""

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None
        self.last_id: str | None = None  # the last `id:` seen, for Last-Event-ID

    def feed(self, line: str) -> Event | None:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment (keep-alive)
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self._id = value
            self.last_id = value
        return None

    def _dispatch(self) -> Event | None:
        kind, data, event_id = self._event or "message", self._data, self._id
        self._event, self._data, self._id = "", [], None
        if not data:
            return None
        text = "\n".join(data)
        try:
            payload = json.loads(text)
        except ValueError:
            return Event(kind, text, event_id)
        return Event(kind, typed(kind, payload), event_id)
