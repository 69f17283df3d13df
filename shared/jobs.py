"""Job records in Redis: how a new job is written. Works with sync and async redis-py pipelines."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from shared import codecs, keys
from shared.job_index import index_new_job
from shared.messages import DEFAULT_WEBHOOK_EVENTS, JobStatus, WorkItem
from shared.pipeline_spec import PipelineSpec


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
            {"input": group.first - folded, "first": group.first, "count": len(group.keys),
             "keys": list(group.keys), "field": group.field}
        )  # fmt: skip
        end = group.first + len(group.keys)
        folded += len(group.keys) - 1
    return record


# An open job's record outlives the end of its TTL by this much, so that the deadline sweep
# (which ends it then, services/api/sweep.py) finds it there: ended, it is kept DLPIPE_JOB_TTL_S more.
OPEN_JOB_GRACE_S = 3600
# Why the outputs of a job without `timeout_s` still unfinished at the end of its TTL fail.
TTL_EXPIRED_REASON = "expired: not finished within the job's TTL (DLPIPE_JOB_TTL_S)"


def deadline_ms(created_ms: int, timeout_s: float) -> int:
    """When a job created at `created_ms` with `timeout_s` expires (ms)."""
    return created_ms + int(round(timeout_s * 1000))


def must_end_by_ms(created_ms: int, timeout_s: float | None, ttl_s: int) -> int:
    """When a job must have ended (its score in keys.deadlines): its deadline, else its TTL's end."""
    return deadline_ms(created_ms, timeout_s) if timeout_s is not None else created_ms + ttl_s * 1000


def expired_reason(timeout_s: str) -> str:
    """The error of an output whose job's `timeout_s` passed (workers and the sweep alike)."""
    return f"expired: the job's timeout_s of {timeout_s} s passed"


def encode_inputs(inputs: list[dict[str, Any]]) -> list[bytes]:
    """The items' inputs as their item hashes store them (codecs.encode)."""
    return [codecs.encode(value) for value in inputs]


def stored_bytes(encoded: list[bytes], blobs: list[bytes] | None = None) -> int:
    """What a job's inputs take in Redis, as the byte budget (keys.BYTES) counts them: each
    item's encoded input and each job blob. Payload bytes only: Redis's own overhead per key
    (tens of bytes) is small beside inputs, and maxmemory bounds the rest."""
    return sum(map(len, encoded)) + sum(map(len, blobs or []))


# What a job keeps of one input for previews (`keep_inputs`, keys.job_inputs): its bytes (an
# upload, a base64 image, a text as UTF-8), the number of the job blob holding it (an uploaded
# video), or None (nothing kept: a URL, a path).
Kept = bytes | int | None


def kept_bytes(kept: list[Kept] | None) -> int:
    """The bytes kept inputs add to a job's stored bytes (blobs are counted once, as blobs)."""
    return sum(len(k) for k in kept or [] if isinstance(k, bytes))


def drop_items(pipe: Any, job_id: str, total: int) -> None:
    """Free the inputs of a job's items that will never run (the job was canceled or expired)."""
    for index in range(total):
        pipe.unlink(keys.item(job_id, index))


def queue_new_job(
    pipe: Any,
    *,
    job_id: str,
    pipeline: PipelineSpec,
    inputs: list[dict[str, Any]],
    webhook: str | None,
    metadata: dict[str, Any] | None,
    ttl_s: int,
    created_ms: int,
    sources: list[str | None] | None = None,
    groups: list[InputGroup] | None = None,
    blobs: list[bytes] | None = None,
    item_blobs: list[int | None] | None = None,
    webhook_events: list[str] | None = None,
    timeout_s: float | None = None,
    admission: str | None = None,
    encoded: list[bytes] | None = None,
    owner: str = "anon",
    kept: list[Kept] | None = None,
) -> None:
    """Add to a (MULTI) pipeline the commands that create a job and queue its items.

    Each item's original input is stored once, in its item hash; the stream entries
    carry only references. `inputs` are the items; `groups` (in order) gather consecutive
    items that stand for one input (a video's frames), recorded in the job hash as JSON
    `groups` so that the job view shows one output per input. `sources` (one per output,
    that is per input: a file name, path or URL, or None) go in the job hash as a JSON list,
    `sources`, when any is given.

    `blobs` are stored once each, as the job's blob keys (keys.job_blob, with the job's TTL);
    `item_blobs` (one per item, None: none) names the blob an item reads, in its hash's
    `blob` field (Store.load hands the bytes to the item's stages). The caller executes the
    pipeline.

    `timeout_s`: the job's items not finished `timeout_s` after `created_ms` fail as expired
    (the job hash keeps `timeout_s` and `deadline`, in ms; workers check it as they take an
    item). Every job joins its pipeline's deadlines set (keys.deadlines), scored by when it must
    have ended (must_end_by_ms); its record is kept OPEN_JOB_GRACE_S past its TTL while open. The
    pipeline's backlog counter (keys.backlog) grows by the number of items in the same
    transaction; `admission` names the grant (keys.admissions) the API took for this job,
    removed here as the job starts counting in the backlog itself.

    The byte budget (keys.BYTES) grows by the job's stored inputs (stored_bytes), kept in the
    job hash as `bytes` (given back as the job ends, by the script that ends it), and the grant
    leaves its set too (keys.BYTE_GRANTS). `encoded`: the inputs encoded already
    (encode_inputs), by a caller that needed their size first (admission); else encoded here.

    `owner` (an API key's id, `anon`) owns the job: it is in that owner's index sets
    (shared/job_index.py) and only that owner sees it when keys are set. `kept` (one per input,
    `keep_inputs`): the originals kept for previews in keys.job_inputs while the job is kept;
    counted in the job's `bytes` (the byte budget) while it is open.
    """
    groups_json = groups_record(groups or [], len(inputs))
    n_outputs = len(inputs) - sum(g["count"] - 1 for g in groups_json)
    if sources is not None and len(sources) != n_outputs:
        raise ValueError(f"{len(sources)} sources for {n_outputs} inputs")
    if item_blobs is not None and len(item_blobs) != len(inputs):
        raise ValueError(f"{len(item_blobs)} blob references for {len(inputs)} items")
    if any(n is not None and not 0 <= n < len(blobs or []) for n in item_blobs or []):
        raise ValueError("an item refers to a blob that is not given")
    if encoded is None:
        encoded = encode_inputs(inputs)
    elif len(encoded) != len(inputs):
        raise ValueError(f"{len(encoded)} encoded inputs for {len(inputs)} items")
    nbytes = stored_bytes(encoded, blobs) + kept_bytes(kept)
    job_key = keys.job(job_id)
    record = {
        "id": job_id,
        "pipeline": pipeline.name,
        "status": JobStatus.queued.value,
        "created_at": str(created_ms),
        "total": str(len(inputs)),
        "done": "0",
        "failed": "0",
        "bytes": str(nbytes),
    }
    if webhook:
        record["webhook"] = webhook
        # Which events it gets ('started,progress,completed'): the workers' scripts read it
        # to decide, cheaply, whether to emit job.started / job.progress at all.
        record["webhook_events"] = ",".join(webhook_events or DEFAULT_WEBHOOK_EVENTS)
    if metadata is not None:
        record["metadata"] = json.dumps(metadata, separators=(",", ":"))
    if sources and any(s is not None for s in sources):
        record["sources"] = json.dumps(sources, separators=(",", ":"), ensure_ascii=False)
    if groups_json:
        record["groups"] = json.dumps(groups_json, separators=(",", ":"), ensure_ascii=False)
    if timeout_s is not None:
        record["timeout_s"] = f"{timeout_s:g}"
        record["deadline"] = str(deadline_ms(created_ms, timeout_s))
    record.update(index_new_job(pipe, job_id, owner, pipeline.name, created_ms))
    if kept is not None:
        record["kept"] = "1"
        fields = {str(i): k for i, k in enumerate(kept) if isinstance(k, bytes)}
        fields.update({f"blob:{i}": str(k) for i, k in enumerate(kept) if isinstance(k, int)})
        if fields:
            pipe.hset(keys.job_inputs(job_id), mapping=fields)
            pipe.expire(keys.job_inputs(job_id), ttl_s + OPEN_JOB_GRACE_S)
    for n, blob in enumerate(blobs or []):
        pipe.set(keys.job_blob(job_id, n), blob, ex=ttl_s)
    pipe.hset(job_key, mapping=record)
    pipe.expire(job_key, ttl_s + OPEN_JOB_GRACE_S)
    pipe.zadd(keys.deadlines(pipeline.name), {job_id: must_end_by_ms(created_ms, timeout_s, ttl_s)})
    pipe.incrby(keys.backlog(pipeline.name), len(inputs))
    pipe.hincrby(keys.BYTES, "held", nbytes)
    if admission is not None:
        pipe.zrem(keys.admissions(pipeline.name), admission)
        pipe.zrem(keys.BYTE_GRANTS, admission)
    first_stages = pipeline.sources()
    for index, value in enumerate(encoded):
        item_key = keys.item(job_id, index)
        fields: dict[str, bytes | str] = {keys.INPUT_FIELD: value}
        fields.update({keys.stage_enqueued_field(s.name): "1" for s in first_stages})
        if item_blobs is not None and item_blobs[index] is not None:
            fields[keys.BLOB_FIELD] = keys.job_blob(job_id, item_blobs[index])
        pipe.hset(item_key, mapping=fields)
        pipe.expire(item_key, ttl_s)
        for stage in first_stages:
            entry = WorkItem(job_id=job_id, index=index, pipeline=pipeline.name, stage=stage.name)
            pipe.xadd(keys.stream(pipeline.stream_name(stage)), entry.to_fields())
