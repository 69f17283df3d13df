"""Typed messages: what travels on streams, what is stored per job, what the API returns."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from enum import Enum
from typing import Any, Literal, overload

from pydantic import BaseModel, Field

from shared import codecs
from shared.priority import Priority

log = logging.getLogger(__name__)


class JobStatus(str, Enum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    canceled = "canceled"

    @property
    def is_final(self) -> bool:
        return self in (JobStatus.succeeded, JobStatus.failed, JobStatus.canceled)


class ItemStatus(str, Enum):
    pending = "pending"
    succeeded = "succeeded"
    failed = "failed"
    canceled = "canceled"  # never ran: its job was canceled first


class StageKind(str, Enum):
    preprocess = "preprocess"
    model = "model"
    postprocess = "postprocess"


class EventType(str, Enum):
    """Job events: the events stream carries them, webhooks deliver them (`webhook_events`)."""

    started = "job.started"
    progress = "job.progress"
    completed = "job.completed"

    @property
    def short(self) -> str:
        """The name a job's `webhook_events` uses: 'started', 'progress', 'completed'."""
        return self.value.split(".", 1)[1]


WebhookEventName = Literal["started", "progress", "completed"]
WEBHOOK_EVENT_NAMES: tuple[str, ...] = ("started", "progress", "completed")
DEFAULT_WEBHOOK_EVENTS: tuple[str, ...] = ("completed",)


def parse_webhook_events(text: str | None) -> list[str]:
    """A job record's `webhook_events` ('started,completed') as a list, in canonical order."""
    if not text:
        return list(DEFAULT_WEBHOOK_EVENTS)
    named = set(text.split(","))
    return [name for name in WEBHOOK_EVENT_NAMES if name in named]


class WebhookState(str, Enum):
    pending = "pending"  # queued, no attempt made yet (or redelivery requested)
    delivering = "delivering"  # an attempt is in flight
    succeeded = "succeeded"  # the receiver answered 2xx
    failed = "failed"  # the last attempt failed; the next one is due at `next_attempt_at`
    dead = "dead"  # given up: no attempt left, 410 Gone, or refused; `redeliver` sends it again


def now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


@overload
def ms_to_datetime(value: int) -> datetime: ...
@overload
def ms_to_datetime(value: int | str | bytes | None) -> datetime | None: ...
def ms_to_datetime(value: int | str | bytes | None) -> datetime | None:
    """Epoch milliseconds (as Redis gives them: text or bytes too) as a UTC datetime; None for none."""
    if value in (None, b"", ""):
        return None
    return datetime.fromtimestamp(int(value) / 1000, tz=UTC)


class WorkItem(BaseModel):
    """One item of one job, queued for one stage: a stream entry."""

    job_id: str
    index: int
    pipeline: str
    stage: str

    def to_fields(self) -> dict[str, str]:
        return {"job": self.job_id, "index": str(self.index), "pipeline": self.pipeline, "stage": self.stage}

    @classmethod
    def from_fields(cls, fields: dict[Any, Any]) -> WorkItem:
        f = {codecs.text(k): codecs.text(v) for k, v in fields.items()}
        return cls(job_id=f["job"], index=int(f["index"]), pipeline=f["pipeline"], stage=f["stage"])


class ItemOutput(BaseModel):
    index: int
    status: ItemStatus
    result: Any = None
    error: str | None = None
    source: str | None = Field(
        default=None,
        description=(
            "Where the input came from, when it has a name: the path under the data root "
            "(`path` inputs, one per file of a folder; `video_path`), the uploaded file's name (multipart), "
            "the URL (`image_url`); null for inputs sent inline."
        ),
    )


class Progress(BaseModel):
    done: int
    total: int


class WebhookAttempt(BaseModel):
    at: datetime = Field(description="When the attempt started.")
    status_code: int | None = Field(default=None, description="The receiver's HTTP status (null: no answer).")
    error: str | None = Field(default=None, description="Why it failed; null when it succeeded.")
    duration_ms: int | None = Field(description="How long the attempt took (null: cut short, unknown).")


class WebhookView(BaseModel):
    """Where a job's webhook goes, which events it wants, and how its latest delivery went: the
    job.completed one once the job has finished (the delivery fields are null until an event is sent)."""

    url: str = Field(description="The http(s) URL events are POSTed to.")
    events: list[WebhookEventName] = Field(description="The events it receives.")
    event: EventType | None = Field(default=None, description="The event of the delivery shown.")
    id: str | None = Field(default=None, description="That delivery's `webhook-id` header.")
    state: WebhookState | None = Field(default=None, description="How that delivery stands.")
    attempts: list[WebhookAttempt] = Field(default_factory=list, description="Its attempts, oldest first.")
    last_status_code: int | None = Field(default=None, description="The last attempt's HTTP status.")
    last_error: str | None = Field(default=None, description="Why the last attempt failed.")
    next_attempt_at: datetime | None = Field(default=None, description="When the next attempt is due.")


class JobView(BaseModel):
    """A job as `GET /v1/jobs/{id}` returns it and webhooks deliver it."""

    id: str
    pipeline: str
    status: JobStatus
    priority: Priority = Field(
        default=Priority.normal,
        description="The job's priority: its items go before lower ones' at every stage (see submit).",
    )
    progress: Progress
    created_at: datetime
    started_at: datetime | None = None
    completed_at: datetime | None = None
    deadline_at: datetime | None = Field(
        default=None,
        description=(
            "created_at + the job's `timeout_s` (null: none): items not finished by then fail as expired."
        ),
    )
    outputs: list[ItemOutput] = Field(default_factory=list)
    error: str | None = None
    metadata: dict[str, Any] | None = None
    webhook: WebhookView | None = Field(
        default=None, description="The job's webhook and how its latest delivery went (null: none)."
    )


class JobEvent(BaseModel):
    """An entry of the events stream, read by the notifier."""

    job_id: str
    type: EventType
    at_ms: int | None = None  # when it happened (the scripts that emit events add it)

    def to_fields(self) -> dict[str, str]:
        fields = {"job": self.job_id, "type": self.type.value}
        if self.at_ms is not None:
            fields["at"] = str(self.at_ms)
        return fields

    @classmethod
    def from_fields(cls, fields: dict[Any, Any]) -> JobEvent:
        f = {codecs.text(k): codecs.text(v) for k, v in fields.items()}
        at = int(f["at"]) if f.get("at") else None
        return cls(job_id=f["job"], type=EventType(f["type"]), at_ms=at)


def group_outputs(items: list[ItemOutput], groups: list[dict[str, Any]]) -> list[ItemOutput]:
    """Item outputs -> one output per input, for a job whose record has `groups` (shared/jobs.py).

    A group is an input that ran as `count` items from `first` on (a video: one per frame),
    each with its key (the frame time, "0.500"). Its output is pending until every item is
    done; then its result is `{field: {key: item result}, "errors": {key: reason}}` (the
    items that succeeded, the ones that failed), and it succeeded if any item did, else it
    failed. Items of no group stay as they are. `index` is the input's index either way.
    """
    starts = {int(g["first"]): g for g in groups}
    grouped: list[ItemOutput] = []
    position = 0
    while position < len(items):
        index = len(grouped)
        group = starts.get(position)
        if group is None:
            grouped.append(items[position].model_copy(update={"index": index}))
            position += 1
            continue
        count, field = int(group["count"]), str(group.get("field") or "items")
        members = list(zip(group["keys"], items[position : position + count], strict=False))
        position += count
        if any(item.status == ItemStatus.pending for _, item in members):
            grouped.append(ItemOutput(index=index, status=ItemStatus.pending))
            continue
        if any(item.status == ItemStatus.canceled for _, item in members):
            grouped.append(ItemOutput(index=index, status=ItemStatus.canceled))
            continue
        results = {key: item.result for key, item in members if item.status == ItemStatus.succeeded}
        errors = {key: item.error or "failed" for key, item in members if item.status == ItemStatus.failed}
        result = {field: results, "errors": errors}
        if results:
            grouped.append(ItemOutput(index=index, status=ItemStatus.succeeded, result=result))
        else:
            first_key, first_error = next(iter(errors.items()))
            error = f"all {count} {field} failed ({first_key}: {first_error})"
            grouped.append(ItemOutput(index=index, status=ItemStatus.failed, result=result, error=error))
    return grouped


UNREADABLE = "its stored result cannot be read"


def _stored_output(index: int, raw: Any) -> ItemOutput:
    """An output as stored. pydantic's JSON parser refuses what json takes (a lone surrogate
    escape): such an output is read with json (and the API's renderer leaves out what it cannot
    render); one json cannot read either fails with a reason, never the whole job."""
    try:
        return ItemOutput.model_validate_json(raw)
    except ValueError:
        pass
    try:
        return ItemOutput.model_validate(json.loads(raw))
    except (ValueError, RecursionError, TypeError) as exc:
        log.error("output %d cannot be read (%s)", index, exc)
        return ItemOutput(index=index, status=ItemStatus.failed, error=UNREADABLE)
