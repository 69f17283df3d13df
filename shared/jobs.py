"""Job records in Redis: how a new job is written (its record: shared/job_record.py). Works with sync and async redis-py pipelines."""

from __future__ import annotations

from typing import Any

from shared import codecs, keys
from shared.job_index import index_new_job
from shared.job_record import JobRecord, deadline_ms
from shared.messages import WorkItem
from shared.pipeline_spec import PipelineSpec

# An open job's record outlives the end of its TTL by this much, so that the deadline sweep
# (which ends it then, services/api/sweep.py) finds it there: ended, it is kept DLPIPE_JOB_TTL_S more.
OPEN_JOB_GRACE_S = 3600
# Why the outputs of a job without `timeout_s` still unfinished at the end of its TTL fail.
TTL_EXPIRED_REASON = "expired: not finished within the job's TTL (DLPIPE_JOB_TTL_S)"


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
    record: JobRecord,
    *,
    pipeline: PipelineSpec,
    inputs: list[dict[str, Any]],
    ttl_s: int,
    blobs: list[bytes] | None = None,
    item_blobs: list[int | None] | None = None,
    admission: str | None = None,
    encoded: list[bytes] | None = None,
    owner: str = "anon",
    kept: list[Kept] | None = None,
) -> None:
    """Add to a (MULTI) pipeline the commands that create a job and queue its items.

    `record` (shared/job_record.py: its id, pipeline, items, priority, webhook, metadata,
    sources, groups, deadline) is the job hash, as record.to_hash() writes it, plus `bytes`,
    `kept` and the index's fields. Each item's original input is stored once, in its item
    hash; the stream entries carry only references. `inputs` are the items (record.total).

    `blobs` are stored once each, as the job's blob keys (keys.job_blob, with the job's TTL);
    `item_blobs` (one per item, None: none) names the blob an item reads, in its hash's
    `blob` field (Store.load hands the bytes to the item's stages). The caller executes the
    pipeline.

    The record's `timeout_s`: the job's items not finished `timeout_s` after its creation fail as
    expired (the job hash keeps `timeout_s` and `deadline`, in ms; workers check it as they take
    an item). Every job joins its pipeline's deadlines set (keys.deadlines), scored by when it must
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
    The record's `priority` (kept in the job hash as `priority`) picks the streams its items go to
    (keys.priority_stream_name), here and at every later stage (Store.complete follows the
    stream an entry came from).
    """
    if record.pipeline != pipeline.name or record.total != len(inputs):
        raise ValueError(
            f"a record of {record.total} items of {record.pipeline!r} for {len(inputs)} of {pipeline.name!r}"
        )
    job_id, created_ms, priority = record.id, record.created_ms, record.priority
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
    fields_ = record.to_hash()
    fields_["bytes"] = str(nbytes)
    fields_.update(index_new_job(pipe, job_id, owner, pipeline.name, created_ms))
    if kept is not None:
        fields_["kept"] = "1"
        originals: dict[str, bytes | str] = {str(i): k for i, k in enumerate(kept) if isinstance(k, bytes)}
        originals.update({f"blob:{i}": str(k) for i, k in enumerate(kept) if isinstance(k, int)})
        if originals:
            pipe.hset(keys.job_inputs(job_id), mapping=originals)
            pipe.expire(keys.job_inputs(job_id), ttl_s + OPEN_JOB_GRACE_S)
    for n, blob in enumerate(blobs or []):
        pipe.set(keys.job_blob(job_id, n), blob, ex=ttl_s)
    pipe.hset(job_key, mapping=fields_)
    pipe.expire(job_key, ttl_s + OPEN_JOB_GRACE_S)
    pipe.zadd(keys.deadlines(pipeline.name), {job_id: must_end_by_ms(created_ms, record.timeout_s, ttl_s)})
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
        blob_n = item_blobs[index] if item_blobs is not None else None
        if blob_n is not None:
            fields[keys.BLOB_FIELD] = keys.job_blob(job_id, blob_n)
        pipe.hset(item_key, mapping=fields)
        pipe.expire(item_key, ttl_s)
        for stage in first_stages:
            entry = WorkItem(job_id=job_id, index=index, pipeline=pipeline.name, stage=stage.name)
            stream = keys.priority_stream_name(pipeline.stream_name(stage), priority)
            pipe.xadd(keys.stream(stream), entry.to_fields())
