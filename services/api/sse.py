"""One client's `GET /v1/jobs/{id}/events`: its snapshot, then the job's updates, as SSE.

A fresh client gets what it missed first: every output finished so far, then the progress (the
stream's last id on that `progress` event), or `completed` at once if the job has ended. A client
that resumes (`Last-Event-ID`, an id this route gave) gets the entries after that id from the job's
event stream, when they are all still there (the stream is capped; a grouped job, a video, always
gets the snapshot): else the snapshot, so an output may come twice after a long gap (tell them
apart by `index`). Then each output as its item ends (a group, a video's frames, once all of its
items have), a `progress` after each batch of them, and `completed` (the final job) to end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from services.api.job_events import JobEventHub, Subscription, Update, entry_key, parse_entry
from services.api.routers.jobs import read_job
from services.api.views import UNRENDERABLE, job_json
from shared import codecs, keys
from shared.messages import ItemOutput, ItemStatus, JobStatus, _stored_output, group_outputs
from shared.redis import job_reads

RESUMABLE_ID = re.compile(r"^[0-9]{1,20}-[0-9]{1,20}$")


def message(event: str | None, data: str, event_id: str | None = None) -> str:
    lines = [f"id: {event_id}"] if event_id else []
    if event:
        lines.append(f"event: {event}")
    lines.append(f"data: {data}")
    return "\n".join(lines) + "\n\n"


KEEP_ALIVE = ": keep-alive\n\n"


def _output_json(output: ItemOutput) -> str:
    try:
        return output.model_dump_json()
    except ValueError:
        return ItemOutput(index=output.index, status=output.status, error=UNRENDERABLE).model_dump_json()


class Outputs:
    """Which outputs of one job have been sent, and which an item's end completes."""

    def __init__(self, job: dict[str, str]) -> None:
        self.total = int(job.get("total") or 0)
        self.groups = json.loads(job["groups"]) if job.get("groups") else []
        self.sources = json.loads(job["sources"]) if job.get("sources") else []
        self.items: dict[int, ItemOutput] = {}  # a grouped job's finished items
        self.sent: set[int] = set()

    def finished(self, index: int, raw: bytes | None) -> list[ItemOutput]:
        """The outputs the end of item `index` completes, not sent yet (marked sent)."""
        if raw is None or not 0 <= index < self.total:
            return []
        item = _stored_output(index, raw)
        if not self.groups:
            shown = [item]
        else:
            self.items[index] = item
            pending = ItemOutput(index=0, status=ItemStatus.pending)
            every = [self.items.get(i, pending) for i in range(self.total)]
            shown = [o for o in group_outputs(every, self.groups) if o.status != ItemStatus.pending]
        new = [o for o in shown if o.index not in self.sent]
        for output in new:
            self.sent.add(output.index)
            if output.index < len(self.sources):
                output.source = self.sources[output.index]
        return new


@dataclass
class Session:
    client: Any
    hub: JobEventHub
    job_id: str
    stopping: asyncio.Event
    keepalive_s: float

    async def open(
        self, resume: str | None
    ) -> tuple[Subscription, contextlib.AsyncExitStack, job_reads.JobSnapshot] | None:
        """Subscribe, then read the snapshot; None (nothing held) if there is no such job."""
        stack = contextlib.AsyncExitStack()
        sub = await stack.enter_async_context(self.hub.subscribe(self.job_id))
        try:
            resume_id = resume if resume and RESUMABLE_ID.match(resume) else ""
            snapshot = await job_reads.job_snapshot(job_id=self.job_id, resume_id=resume_id).run_async(
                self.client
            )
        except BaseException:
            await stack.aclose()
            raise
        if not snapshot.job:
            await stack.aclose()
            return None
        return sub, stack, snapshot

    async def _completed(self, event_id: str | None) -> str:
        view = await read_job(self.client, self.job_id)
        return message("completed", job_json(view).decode(), event_id)

    async def events(
        self, sub: Subscription, stack: contextlib.AsyncExitStack, snapshot: job_reads.JobSnapshot
    ) -> AsyncIterator[str]:
        async with stack:
            job, outputs_flat, last = snapshot.job, snapshot.outputs, snapshot.last
            if JobStatus(job["status"]).is_final:
                yield await self._completed(last if last != "0-0" else None)
                return
            outputs = Outputs(job)
            self.hub.start_from(self.job_id, last)
            done = int(job.get("done") or 0)
            if snapshot.resumed:
                values = iter(snapshot.entry_outputs)
                updates = []
                for entry_id, fields in snapshot.entries:
                    f = {
                        codecs.text(k): codecs.text(v) for k, v in zip(fields[::2], fields[1::2], strict=True)
                    }
                    raw = next(values, None) if f.get("t") == "o" else None
                    update = parse_entry(entry_id, f, raw)
                    if update is not None:
                        updates.append(update)
                async for ended, text in self._updates(outputs, updates):
                    yield text
                    if ended:
                        return
            else:
                stored = {
                    int(codecs.text(k)): v for k, v in zip(outputs_flat[::2], outputs_flat[1::2], strict=True)
                }
                for index in sorted(stored):
                    for output in outputs.finished(index, stored[index]):
                        yield message("output", _output_json(output))
            yield message(
                "progress",
                json.dumps({"done": done, "total": outputs.total}),
                last if last != "0-0" else None,
            )
            seen = entry_key(last)
            while True:
                batch = await self._next(sub)
                if batch is None:  # stopping
                    return
                if not batch:  # quiet for keepalive_s: a comment, and a look at the job itself
                    yield KEEP_ALIVE
                    status = await self.client.hget(keys.job(self.job_id), "status")
                    if status is None:
                        return
                    if JobStatus(codecs.text(status)).is_final:
                        yield await self._completed(None)
                        return
                    continue
                fresh = [u for u in batch if entry_key(u.id) > seen]
                if not fresh:
                    continue
                seen = entry_key(fresh[-1].id)
                async for ended, text in self._updates(outputs, fresh):
                    yield text
                    if ended:
                        return

    async def _updates(self, outputs: Outputs, updates: list[Update]) -> AsyncIterator[tuple[bool, str]]:
        """(the stream ends, text) for each message these updates make: outputs, then one progress."""
        done, last = None, None
        for update in updates:
            if update.ended:
                yield True, await self._completed(update.id)
                return
            for output in outputs.finished(update.index or 0, update.output):
                yield False, message("output", _output_json(output), update.id)
            done, last = update.done, update.id
        if done is not None:
            yield False, message("progress", json.dumps({"done": done, "total": outputs.total}), last)

    async def _next(self, sub: Subscription) -> list[Update] | None:
        """The next batch of updates; [] after keepalive_s without one; None once the API stops."""
        if self.stopping.is_set():
            return None
        getting = asyncio.ensure_future(sub.queue.get())
        stopping = asyncio.ensure_future(self.stopping.wait())
        try:
            done, _ = await asyncio.wait(
                {getting, stopping}, timeout=self.keepalive_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            stopping.cancel()
            if not getting.done():
                getting.cancel()
        if getting in done:
            return getting.result()
        return None if self.stopping.is_set() else []
