"""Job records in Redis: how a new job is written. Works with sync and async redis-py pipelines."""

from __future__ import annotations

import json
from typing import Any

from shared import codecs, keys
from shared.messages import JobStatus, WorkItem
from shared.pipeline_spec import PipelineSpec


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
) -> None:
    """Add to a (MULTI) pipeline the commands that create a job and queue its items.

    Each item's original input is stored once, in its item hash; the stream entries
    carry only references. `sources` (one per input: a file name, path or URL, or None)
    go in the job hash as a JSON list, `sources`, when any is given. The caller executes
    the pipeline.
    """
    if sources is not None and len(sources) != len(inputs):
        raise ValueError(f"{len(sources)} sources for {len(inputs)} inputs")
    job_key = keys.job(job_id)
    record = {
        "id": job_id,
        "pipeline": pipeline.name,
        "status": JobStatus.queued.value,
        "created_at": str(created_ms),
        "total": str(len(inputs)),
        "done": "0",
        "failed": "0",
    }
    if webhook:
        record["webhook"] = webhook
    if metadata is not None:
        record["metadata"] = json.dumps(metadata, separators=(",", ":"))
    if sources and any(s is not None for s in sources):
        record["sources"] = json.dumps(sources, separators=(",", ":"), ensure_ascii=False)
    pipe.hset(job_key, mapping=record)
    pipe.expire(job_key, ttl_s)
    first_stages = pipeline.sources()
    for index, value in enumerate(inputs):
        item_key = keys.item(job_id, index)
        fields: dict[str, bytes | str] = {keys.INPUT_FIELD: codecs.encode(value)}
        fields.update({keys.stage_enqueued_field(s.name): "1" for s in first_stages})
        pipe.hset(item_key, mapping=fields)
        pipe.expire(item_key, ttl_s)
        for stage in first_stages:
            entry = WorkItem(job_id=job_id, index=index, pipeline=pipeline.name, stage=stage.name)
            pipe.xadd(keys.stream(pipeline.stream_name(stage)), entry.to_fields())
