"""The one codec of a job's record: what a job says about itself (its pipeline, items,
priority, webhook, metadata, sources, groups, deadline), written in its job hash and read back.

- The writer (shared/jobs.py queue_new_job) stores `JobRecord.to_hash()`, plus what the job's
  bookkeeping adds (its `bytes`, `kept`, the index's `owner`/`ix`); the scripts then change its
  state (`status`, `done`, `started_at`...).
- The reader (job_view_from_redis: GET /v1/jobs/{id}, webhooks, events) is
  `JobRecord.from_hash(hash).to_view(...)` with that state and the outputs.
- The 202 body (services/api/job_writer.py) is `JobRecord.to_view()` of the record it writes:
  the answer to a submit and the job read back later cannot drift apart.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from shared import codecs
from shared import priority as priorities
from shared.messages import (
    DEFAULT_WEBHOOK_EVENTS,
    ItemOutput,
    ItemStatus,
    JobStatus,
    JobView,
    Progress,
    WebhookView,
    _stored_output,
    group_outputs,
    ms_to_datetime,
    parse_webhook_events,
)
from shared.priority import Priority

log = logging.getLogger(__name__)

_COMPACT = (",", ":")


@dataclass(frozen=True)
class InputGroup:
    """One input that runs as several items (a video: one item per frame time).

    Its items are the len(keys) consecutive ones from `first` on; the job view shows them as
    the input's one output, `{field: {key: item result}, ...}` (messages.group_outputs).
    """

    first: int
    keys: list[str]
    field: str


def groups_record(groups: list[InputGroup], n_items: int) -> list[dict[str, Any]]:
    """The job hash's `groups`, checked: in order, not overlapping, inside the items."""
    record, end, folded = [], 0, 0  # folded: items beyond the first of each group so far
    for group in groups:
        if not group.keys or group.first < end or group.first + len(group.keys) > n_items:
            raise ValueError(
                f"group of {len(group.keys)} items at {group.first} does not fit {n_items} items"
            )
        record.append(
            {
                "input": group.first - folded,
                "first": group.first,
                "count": len(group.keys),
                "keys": list(group.keys),
                "field": group.field,
            }
        )
        end = group.first + len(group.keys)
        folded += len(group.keys) - 1
    return record


def deadline_ms(created_ms: int, timeout_s: float) -> int:
    """When a job created at `created_ms` with `timeout_s` expires (ms)."""
    return created_ms + int(round(timeout_s * 1000))


@dataclass(frozen=True)
class JobRecord:
    id: str
    pipeline: str
    created_ms: int
    total: int  # its items
    priority: Priority = Priority.normal
    webhook: str | None = None
    webhook_events: tuple[str, ...] = ()  # which (() with a webhook: DEFAULT_WEBHOOK_EVENTS)
    metadata: dict[str, Any] | None = None
    sources: tuple[str | None, ...] = ()  # one per output (an input's file name, path, URL)
    groups: tuple[dict[str, Any], ...] = ()  # as groups_record makes them
    timeout_s: float | None = None
    deadline_ms: int | None = None  # created_ms + timeout_s (set by `new`)

    @classmethod
    def new(
        cls,
        *,
        id: str,
        pipeline: str,
        created_ms: int,
        total: int,
        priority: Priority = Priority.normal,
        webhook: str | None = None,
        webhook_events: Sequence[str] | None = None,
        metadata: dict[str, Any] | None = None,
        sources: Sequence[str | None] | None = None,
        groups: Sequence[InputGroup] | None = None,
        timeout_s: float | None = None,
    ) -> JobRecord:
        """A record for a job being written, checked: its `groups` fit its items (in order, not
        overlapping), `sources` (given) are one per output; its deadline from `timeout_s`."""
        checked = groups_record(list(groups or []), total)
        n_outputs = total - sum(g["count"] - 1 for g in checked)
        if sources is not None and len(sources) != n_outputs:
            raise ValueError(f"{len(sources)} sources for {n_outputs} inputs")
        return cls(
            id=id,
            pipeline=pipeline,
            created_ms=created_ms,
            total=total,
            priority=Priority(priority),
            webhook=webhook or None,
            webhook_events=tuple(webhook_events or ()),
            metadata=metadata,
            sources=tuple(sources or ()),
            groups=tuple(checked),
            timeout_s=timeout_s,
            deadline_ms=deadline_ms(created_ms, timeout_s) if timeout_s is not None else None,
        )

    def to_hash(self) -> dict[str, str]:
        """The job hash's fields, as a new (queued) job has them."""
        record = {
            "id": self.id,
            "pipeline": self.pipeline,
            "status": JobStatus.queued.value,
            "created_at": str(self.created_ms),
            "total": str(self.total),
            "done": "0",
            "failed": "0",
            "priority": Priority(self.priority).value,
        }
        if self.webhook:
            record["webhook"] = self.webhook
            # Which events it gets ('started,progress,completed'): the workers' scripts read it
            # to decide, cheaply, whether to emit job.started / job.progress at all.
            record["webhook_events"] = ",".join(self.webhook_events or DEFAULT_WEBHOOK_EVENTS)
        if self.metadata is not None:
            record["metadata"] = json.dumps(self.metadata, separators=_COMPACT)
        if any(s is not None for s in self.sources):
            record["sources"] = json.dumps(list(self.sources), separators=_COMPACT, ensure_ascii=False)
        if self.groups:
            record["groups"] = json.dumps(list(self.groups), separators=_COMPACT, ensure_ascii=False)
        if self.timeout_s is not None:
            record["timeout_s"] = f"{self.timeout_s:g}"
        if self.deadline_ms is not None:
            record["deadline"] = str(self.deadline_ms)
        return record

    @classmethod
    def from_hash(cls, f: dict[str, str]) -> JobRecord:
        """The record of a job hash (its fields as text); a field that cannot be read is left out
        (logged), never the job."""
        return cls(
            id=f["id"],
            pipeline=f["pipeline"],
            created_ms=int(f["created_at"]),
            total=int(f.get("total", 0)),
            priority=priorities.parse(f.get("priority")),
            webhook=f.get("webhook") or None,
            webhook_events=tuple(parse_webhook_events(f.get("webhook_events"))) if f.get("webhook") else (),
            metadata=_stored_json(f["metadata"], "metadata") if f.get("metadata") else None,
            sources=tuple(json.loads(f["sources"])) if f.get("sources") else (),
            groups=tuple(json.loads(f["groups"])) if f.get("groups") else (),
            timeout_s=_number(f.get("timeout_s")),
            deadline_ms=int(f["deadline"]) if f.get("deadline") else None,
        )

    def to_view(
        self,
        items: list[ItemOutput] | None = None,
        *,
        status: JobStatus = JobStatus.queued,
        done: int = 0,
        started_at: str | None = None,
        completed_at: str | None = None,
        error: str | None = None,
    ) -> JobView:
        """The job's view: `items` one output per item (None: none finished yet), grouped by its
        groups, with its sources."""
        if items is None:
            # An item of a canceled job that has no output never will: `canceled`, not `pending`.
            unfinished = ItemStatus.canceled if status == JobStatus.canceled else ItemStatus.pending
            items = [ItemOutput(index=i, status=unfinished) for i in range(self.total)]
        if self.groups:  # inputs that ran as several items (a video's frames): one output each
            items = group_outputs(items, list(self.groups))
        for item, source in zip(items, self.sources, strict=False):
            item.source = source
        return JobView(
            id=self.id,
            pipeline=self.pipeline,
            status=status,
            priority=self.priority,
            progress=Progress(done=done, total=self.total),
            created_at=ms_to_datetime(self.created_ms),
            started_at=ms_to_datetime(started_at),
            completed_at=ms_to_datetime(completed_at),
            deadline_at=ms_to_datetime(self.deadline_ms),
            outputs=items,
            error=error,
            metadata=self.metadata,
            webhook=(
                WebhookView(url=self.webhook, events=parse_webhook_events(",".join(self.webhook_events)))  # type: ignore[arg-type]
                if self.webhook
                else None
            ),
        )


def job_view_from_redis(job: dict[Any, Any], outputs: dict[Any, Any]) -> JobView:
    """Build a JobView from the job hash and its outputs hash (as redis-py returns them)."""
    f = {codecs.text(k): codecs.text(v) for k, v in job.items()}
    record = JobRecord.from_hash(f)
    status = JobStatus(f["status"])
    done_outputs = {int(codecs.text(k)): _stored_output(int(codecs.text(k)), v) for k, v in outputs.items()}
    unfinished = ItemStatus.canceled if status == JobStatus.canceled else ItemStatus.pending
    items = [done_outputs.get(i, ItemOutput(index=i, status=unfinished)) for i in range(record.total)]
    return record.to_view(
        items,
        status=status,
        done=int(f.get("done", 0)),
        started_at=f.get("started_at"),
        completed_at=f.get("completed_at"),
        error=f.get("error") or None,
    )


def _number(raw: str | None) -> float | None:
    try:
        return float(raw) if raw else None
    except ValueError:
        return None


def _stored_json(raw: str, what: str) -> Any:
    """A JSON field of a job record (its metadata); None, logged, if it cannot be read."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        log.error("a job's %s cannot be read (%s): left out", what, exc)
        return None
