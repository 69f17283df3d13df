"""The workers' side of Redis: read work items, load their inputs, record stage results.

Reads go through consumer groups; an entry is acknowledged only in the same atomic step
that writes its output (shared/redis/lua), so a worker that dies mid-batch leaves its
entries pending for another. Each call is one round trip for the whole batch.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis

from shared import codecs, keys
from shared.jobs import expired_reason
from shared.messages import ItemOutput, ItemStatus, JobStatus, WorkItem, now_ms
from shared.pipeline_spec import INPUT, PipelinesConfig, StageSpec
from shared.files import DEFAULT_MAX_FILE_BYTES, FileError
from shared.priority import Priority
from shared.redis_full import is_out_of_memory
from shared.redis import jobs as job_scripts
from workers.output_files import lift
from workers.scripted_pipeline import ScriptedPipeline

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Entry:
    """A stream entry taken by this worker: where it came from and what it asks for."""

    stream: str  # the stream's key
    entry_id: str
    item: WorkItem

    @property
    def priority(self) -> Priority:
        """Its job's priority: the stream it came from says (keys.stream_priority)."""
        return keys.stream_priority(self.stream)


@dataclass(frozen=True)
class StageResult:
    """What one stage made of one entry: a value, or the reason the item failed."""

    entry: Entry
    value: Any = None
    error: str | None = None
    # Given up after too many deliveries: fields of its dead-letter entry (needs `error`)
    dead_letter: dict[str, str] | None = None
    # The stage whose output `value` is, when not the entry's own: the postprocess stage the
    # model worker ran on the model's row (workers/fusion.py); recorded as if that stage ran.
    stage: str | None = None


_OPEN = (JobStatus.queued.value, JobStatus.running.value)  # a job in any other status has ended



def _need_field(need: str) -> str:
    return keys.INPUT_FIELD if need == INPUT else keys.stage_output_field(need)


class Store:
    def __init__(
        self,
        client: redis.Redis,
        config: PipelinesConfig,
        ttl_s: int,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    ) -> None:
        self.redis = client
        self.config = config
        self.ttl_s = ttl_s
        self.max_file_bytes = max_file_bytes  # DLPIPE_MAX_OUTPUT_FILE_BYTES: one output file at most

    def stage_of(self, item: WorkItem) -> StageSpec:
        return self.config.pipelines[item.pipeline].stage(item.stage)

    def ensure_groups(self, streams: list[str], group: str) -> None:
        """Create the consumer group on each stream (from its start, so nothing queued is missed)."""
        for name in streams:
            try:
                self.redis.xgroup_create(keys.stream(name), group, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" in str(exc):
                    continue
                # Redis over its maxmemory refuses XGROUP CREATE even for a group that exists.
                if not (is_out_of_memory(exc) and self._has_group(keys.stream(name), group)):
                    raise

    def _has_group(self, stream_key: str, group: str) -> bool:
        try:
            found = self.redis.xinfo_groups(stream_key)
        except redis.ResponseError:  # no such stream
            return False
        return any(codecs.text(g.get("name", g.get(b"name", b""))) == group for g in found)

    def read(
        self,
        group: str,
        consumer: str,
        streams: list[str],
        count: int,
        block_ms: int | None,
        *,
        pending: bool = False,
    ) -> list[Entry]:
        """New entries from any of `streams` (names, not keys), at most `count` per stream.

        block_ms=None does not block. pending=True instead re-reads the entries this
        consumer was given but has not acknowledged (after an error mid-batch); it never
        blocks. Malformed entries (no such pipeline or stage, or deleted from the stream
        while pending) are acknowledged and logged: there is no job to fail.
        """
        start = "0" if pending else ">"
        reply = self.redis.xreadgroup(
            group, consumer, {keys.stream(s): start for s in streams}, count=count,
            block=None if pending else block_ms,
        )  # fmt: skip
        return self.entries(group, reply)

    def entries(self, group: str, reply: Any) -> list[Entry]:
        """The Entries of an XREADGROUP reply ([[stream key, [[id, fields]...]]...], the fields a
        dict as redis-py gives them or a flat list as a script does); malformed ones are
        acknowledged and logged (`entry`)."""
        entries: list[Entry] = []
        for stream_key, messages in reply or []:
            for entry_id, fields in messages:
                if isinstance(fields, list):
                    fields = dict(zip(fields[::2], fields[1::2], strict=True))
                entry = self.entry(group, codecs.text(stream_key), codecs.text(entry_id), fields or {})
                if entry is not None:
                    entries.append(entry)
        return entries

    def entry(self, group: str, stream_key: str, entry_id: str, fields: dict[Any, Any]) -> Entry | None:
        """The Entry for a stream entry's fields; None (acknowledged, logged) if malformed."""
        try:
            item = WorkItem.from_fields(fields)
            self.stage_of(item)
        except (KeyError, ValueError) as exc:
            log.error("dropping malformed entry %s on %s: %s", entry_id, stream_key, exc)
            self.redis.xack(stream_key, group, entry_id)
            return None
        return Entry(stream=stream_key, entry_id=entry_id, item=item)

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
        starting = list(dict.fromkeys(e.item.job_id for e in entries if set(self.stage_of(e.item).needs) <= {INPUT}))
        for job_id in starting:
            pipe.call(job_scripts.start_job(job_id=job_id, now=stamp))
        for entry in entries:
            stage = self.stage_of(entry.item)
            fields = [_need_field(n) for n in stage.needs]
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
            self._complete_one(pipe, keys.stream_group(result.entry.stream), result, stamp)
        pipe.execute()
        for job_id in dict.fromkeys(e.item.job_id for e in ended):
            count = sum(e.item.job_id == job_id for e in ended)
            status = jobs[job_id][0]
            why = f"has ended ({codecs.text(status)})" if status is not None else "is gone"
            log.info("job=%s %s: skipped %d entries", job_id, why, count)
        for result in expired:
            item = result.entry.item
            log.info("job=%s stage=%s index=%d %s", item.job_id, item.stage, item.index, result.error)
        return {(e.stream, e.entry_id) for e in ended} | {
            (r.entry.stream, r.entry.entry_id) for r in expired
        }

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

    def complete(
        self,
        group: str,
        results: list[StageResult],
        counters: Mapping[str, Mapping[str, int | float]] | None = None,
    ) -> list[job_scripts.CompleteOutcome]:
        """Record every result (and acknowledge its entry) in one round trip; see COMPLETE_STAGE.

        `counters` (hash key -> field -> increment) are added in the same round trip, after
        the results: HINCRBY for an int, HINCRBYFLOAT for a float. Returns the results' replies.
        """
        pipe = ScriptedPipeline(self.redis)
        stamp = now_ms()
        for result in results:
            self._complete_one(pipe, group, result, stamp)
        counted = len(pipe)
        for key, fields in (counters or {}).items():
            for name, amount in fields.items():
                if isinstance(amount, float):
                    pipe.pipe.hincrbyfloat(key, name, amount)
                else:
                    pipe.pipe.hincrby(key, name, amount)
        return pipe.execute(counts_from=counted)[: len(results)]

    def _complete_one(self, pipe: ScriptedPipeline, group: str, result: StageResult, stamp: int) -> None:
        item = result.entry.item
        pipeline = self.config.pipelines[item.pipeline]
        stage = pipeline.stage(result.stage or item.stage)
        final_json, failed, payload = "", False, b""
        error, value, field = result.error, result.value, keys.stage_output_field(stage.name)
        if error is None and stage.name == pipeline.sink.name:
            # The result's files (shared/files.py) go in ARGV 6 and 7, unused for a final result.
            try:
                lifted = lift(value, job_id=item.job_id, index=item.index, max_bytes=self.max_file_bytes)
                value, field, payload = lifted.result, lifted.manifest, lifted.payload
                json.dumps(value, allow_nan=False)
            except FileError as exc:
                error = f"stage {stage.name!r}: {exc}"
            except (TypeError, ValueError) as exc:
                error = f"stage {stage.name!r} returned a result that is not JSON: {exc}"
        if error is None and stage.name != pipeline.sink.name:
            try:
                payload = codecs.encode(value)
            except codecs.CodecError as exc:
                error = f"stage {stage.name!r} returned a value that cannot travel: {exc}"
        if error is not None:
            output = ItemOutput(index=item.index, status=ItemStatus.failed, error=error)
            final_json, failed, field, payload = output.model_dump_json(), True, "", b""
        elif stage.name == pipeline.sink.name:
            output = ItemOutput(index=item.index, status=ItemStatus.succeeded, result=value)
            final_json = output.model_dump_json()
        downstream = [] if final_json else pipeline.downstream(stage.name)
        assert not result.dead_letter or result.error is not None, "an entry given up fails its item"
        pipe.call(job_scripts.complete_stage(
            job_id=item.job_id, index=item.index, pipeline=item.pipeline,
            stream=result.entry.stream, group=group, entry_id=result.entry.entry_id,
            now=stamp, ttl_s=self.ttl_s, output_field=field, payload=payload,
            final_json=final_json, failed=failed,
            downstream=[
                job_scripts.Downstream(
                    # the item keeps its priority at every stage
                    keys.stream(keys.priority_stream_name(pipeline.stream_name(d), result.entry.priority)),
                    d.name, [_need_field(n) for n in d.needs],
                )
                for d in downstream
            ],
            dead_letter=result.dead_letter,
        ))  # fmt: skip

    def ack_gone(self, group: str, entries: list[Entry]) -> None:
        """Acknowledge entries whose item no longer exists (finished already, or expired)."""
        pipe = self.redis.pipeline(transaction=False)
        for entry in entries:
            pipe.xack(entry.stream, group, entry.entry_id)
        pipe.execute()
