"""The store's inputs side: loading what each entry's stage needs (its item's values, a job
blob's bytes), marking jobs running, and settling the entries of jobs that ended or expired."""

from __future__ import annotations

import logging
from typing import Any

import redis

from shared import codecs, keys
from shared.jobs import expired_reason
from shared.messages import JobStatus, now_ms
from shared.pipeline_spec import INPUT
from shared.redis import jobs as job_scripts
from workers.scripted_pipeline import ScriptedPipeline
from workers.store.results import Results, StageResult, need_field
from workers.store.streams import Entry, Streams

log = logging.getLogger(__name__)

_OPEN = (JobStatus.queued.value, JobStatus.running.value)  # a job in any other status has ended


class Inputs:
    def __init__(self, client: redis.Redis, streams: Streams, results: Results) -> None:
        self.redis = client
        self.stage_of = streams.stage_of
        self.results = results

    def load(self, entries: list[Entry]) -> list[list[Any] | None]:
        """Per entry, the values its stage needs, in `needs` order; None where there is nothing to
        run: the item is gone, its job has ended (canceled, expired), or its job's deadline
        (`timeout_s`) passed.

        Also marks each job running (at an item's first stages), and reads each job's status and
        deadline in the same round trip: entries of an ended job are acknowledged, items past their job's deadline fail
        as expired (through COMPLETE_STAGE, like any failure), both here, before any of their
        work is done; they come back as None. Values that cannot be decoded come back as CodecError
        instances, for the caller to fail the item with. An item whose hash has a `blob`
        field (keys.BLOB_FIELD: a job blob, such as the uploaded video a video's frames
        share) gets that blob's bytes in its input dict, under "blob", for stages that need
        `input`: one more round trip, each blob read once, only when some item has one.
        """
        pipe = ScriptedPipeline(self.redis)
        stamp = now_ms()
        job_ids = list(dict.fromkeys(e.item.job_id for e in entries))
        # Only an item's first stages can find its job still queued: a later stage's entry exists
        # because an earlier stage ran, whose load marked the job running.
        starting = list(
            dict.fromkeys(e.item.job_id for e in entries if set(self.stage_of(e.item).needs) <= {INPUT})
        )
        for job_id in starting:
            pipe.call(job_scripts.start_job(job_id=job_id, now=stamp))
        for entry in entries:
            stage = self.stage_of(entry.item)
            fields = [need_field(n) for n in stage.needs]
            if INPUT in stage.needs:
                fields.append(keys.BLOB_FIELD)
            pipe.pipe.hmget(keys.item(entry.item.job_id, entry.item.index), fields)
        for job_id in job_ids:
            pipe.pipe.hmget(keys.job(job_id), ["status", "deadline", "timeout_s"])
        if not entries:
            return []
        replies = pipe.execute()[len(starting) :]
        items, jobs = replies[: len(entries)], dict(zip(job_ids, replies[len(entries) :], strict=True))
        # The item is there when every value its stage needs is (the blob reference is optional).
        present = [
            all(v is not None for v in raw[: len(self.stage_of(e.item).needs)])
            for e, raw in zip(entries, items, strict=True)
        ]
        skipped = self._skip_stopped(entries, present, jobs, stamp)
        loaded: list[list[Any] | None] = []
        blob_refs: list[tuple[dict[str, Any], str]] = []  # (an input dict, the blob key it reads)
        for entry, raw_values, here in zip(entries, items, present, strict=True):
            if not here or (entry.stream, entry.entry_id) in skipped:
                loaded.append(None)
                continue
            needs = self.stage_of(entry.item).needs
            blob_key = raw_values.pop() if INPUT in needs else None
            try:
                values = [codecs.decode(v) for v in raw_values]
            except codecs.CodecError as exc:
                loaded.append([exc])
                continue
            loaded.append(values)
            if blob_key is not None and isinstance(values[needs.index(INPUT)], dict):
                blob_refs.append((values[needs.index(INPUT)], codecs.text(blob_key)))
        if blob_refs:
            self._attach_blobs(blob_refs)
        return loaded

    def _skip_stopped(
        self, entries: list[Entry], present: list[bool], jobs: dict[str, list[Any]], stamp: int
    ) -> set[tuple[str, str]]:
        """Settle, in one round trip, the entries whose job has ended (canceled, or by the deadline
        sweep) or is gone (acknowledged unrun), or whose job's deadline has passed (the item, if
        still there, fails as expired); returns their (stream, entry id)."""
        ended: list[Entry] = []
        expired: list[StageResult] = []
        for entry, here in zip(entries, present, strict=True):
            status, deadline, timeout_s = jobs[entry.item.job_id]
            if status is None or codecs.text(status) not in _OPEN:  # ended, or gone (its record expired)
                ended.append(entry)
            elif here and deadline is not None and stamp > int(deadline):
                reason = expired_reason(codecs.text(timeout_s or b"?"))
                expired.append(StageResult(entry, error=reason))
        if not ended and not expired:
            return set()
        pipe = ScriptedPipeline(self.redis)
        for entry in ended:
            pipe.pipe.xack(entry.stream, keys.stream_group(entry.stream), entry.entry_id)
        for result in expired:
            self.results.complete_one(pipe, keys.stream_group(result.entry.stream), result, stamp)
        pipe.execute()
        for job_id in dict.fromkeys(e.item.job_id for e in ended):
            count = sum(e.item.job_id == job_id for e in ended)
            status = jobs[job_id][0]
            why = f"has ended ({codecs.text(status)})" if status is not None else "is gone"
            log.info("job=%s %s: skipped %d entries", job_id, why, count)
        for result in expired:
            item = result.entry.item
            log.info("job=%s stage=%s index=%d %s", item.job_id, item.stage, item.index, result.error)
        return {(e.stream, e.entry_id) for e in ended} | {(r.entry.stream, r.entry.entry_id) for r in expired}

    def _attach_blobs(self, refs: list[tuple[dict[str, Any], str]]) -> None:
        """Read each job blob once and put its bytes in the input dicts that name it, as "blob".
        A blob that is gone (expired) comes as None: the stage fails the item, saying so."""
        names = sorted({key for _, key in refs})
        pipe = self.redis.pipeline(transaction=False)
        for name in names:
            pipe.get(name)
        found = dict(zip(names, pipe.execute(), strict=True))
        for inp, key in refs:
            inp[keys.BLOB_FIELD] = found[key]
