"""Every Redis key and group name dlpipe uses, in one place."""

from __future__ import annotations

PREFIX = "dlpipe"

# Consumer groups
CPU_GROUP = "cpu"  # preprocess and postprocess stages, read by `dlpipe worker preprocess`
MODEL_GROUP = "model"  # model stages, read by `dlpipe worker model`
NOTIFIER_GROUP = "notifier"  # the events stream, read by `dlpipe worker notifier`

# Hash fields of an item
INPUT_FIELD = "in"  # the original input, stored once per item
# Optional: the key of a job blob (job_blob) the item reads; Store.load puts its bytes in the
# item's input dict under "blob". An upload several items share (a video) is stored once.
BLOB_FIELD = "blob"


def job(job_id: str) -> str:
    """Hash: the job record (status, timestamps, counters, request fields)."""
    return f"{PREFIX}:job:{job_id}"


def job_outputs(job_id: str) -> str:
    """Hash: input index -> the item's final output (JSON)."""
    return f"{PREFIX}:job:{job_id}:outputs"


def job_blob(job_id: str, n: int) -> str:
    """String: the job's n-th stored original (an uploaded video), read by every item whose
    `blob` field names it; expires with the job's TTL."""
    return f"{PREFIX}:job:{job_id}:blob:{n}"


def backlog(pipeline: str) -> str:
    """String (integer): the pipeline's items accepted and not finished. +n in the job's MULTI
    (shared/jobs.py), -1 as an item finishes (COMPLETE_STAGE), -(unfinished) on cancel and
    expiry. (Their bytes: BYTES.)"""
    return f"{PREFIX}:backlog:{pipeline}"


def deadlines(pipeline: str) -> str:
    """Sorted set: the pipeline's open jobs (ids), scored by when each must have ended (ms): its
    deadline (`timeout_s`), else the end of its DLPIPE_JOB_TTL_S. ZADD in the job's MULTI; ZREM as
    it ends (COMPLETE_STAGE, CANCEL_JOB, EXPIRE_JOB). The API's sweep ends the overdue ones."""
    return f"{PREFIX}:deadlines:{pipeline}"


def drained(pipeline: str) -> str:
    """String (integer): the pipeline's items finished by the workers, ever (+1 in COMPLETE_STAGE
    beside the backlog's -1); its rate sets the 429's Retry-After."""
    return f"{PREFIX}:drained:{pipeline}"


def admissions(pipeline: str) -> str:
    """Sorted set: admissions granted but whose job is not written yet, `<id>:<items>:<bytes>`
    scored by when the grant lapses (ms); they count toward the backlog until the job's MULTI
    removes them."""
    return f"{PREFIX}:admissions:{pipeline}"


# Hash: the byte budget (DLPIPE_MAX_BACKLOG_BYTES), one for the whole Redis (its memory is one
# pool). `held`: the bytes of stored inputs (item inputs and job blobs) of the jobs not ended,
# +the job's `bytes` in its MULTI (shared/jobs.py), -them as it ends (COMPLETE_STAGE, CANCEL_JOB,
# EXPIRE_JOB); `freed`: the bytes given back so, ever (its rate sets a byte refusal's Retry-After).
BYTES = f"{PREFIX}:bytes"
# Sorted set: the byte budget's open grants, the same members as admissions(pipeline) (the
# bytes last), scored by when they lapse; they count toward `held` until the job's MULTI
# removes them.
BYTE_GRANTS = f"{PREFIX}:byte-grants"


def idempotency(caller: str, key_digest: str) -> str:
    """String (JSON): what one `Idempotency-Key` of one caller maps to (request hash, job id, response)."""
    return f"{PREFIX}:idem:{caller}:{key_digest}"


def stream_group(stream_key: str) -> str:
    """The consumer group that works a stream of work items (its key): cpu.* -> cpu, model.* -> model."""
    name = stream_key.removeprefix(f"{PREFIX}:stream:")
    return MODEL_GROUP if name.startswith("model.") else CPU_GROUP


def item(job_id: str, index: int) -> str:
    """Hash: one item's original input and the outputs of its stages, while it is in flight."""
    return f"{PREFIX}:item:{job_id}:{index}"


def stage_output_field(stage: str) -> str:
    return f"out:{stage}"


def stage_enqueued_field(stage: str) -> str:
    """Set once when the item is queued for `stage`, so a join enqueues exactly once."""
    return f"enq:{stage}"


def stream(stream_name: str) -> str:
    """Stream of work items for one pipeline stage (CPU) or one model (shared by pipelines)."""
    return f"{PREFIX}:stream:{stream_name}"


def cpu_stream_name(pipeline: str, stage: str) -> str:
    return f"cpu.{pipeline}.{stage}"


def model_stream_name(model: str) -> str:
    return f"model.{model}"


EVENTS = f"{PREFIX}:events"  # stream of job events for the notifier
DEADLETTER = f"{PREFIX}:deadletter"  # stream of entries given up after too many deliveries
WORKERS = f"{PREFIX}:workers"  # sorted set: worker id -> last heartbeat (ms)


def worker(worker_id: str) -> str:
    """Hash: what a live worker serves (kind, streams, pid, host)."""
    return f"{PREFIX}:worker:{worker_id}"


# Webhook deliveries (the notifier; shared/webhooks.py holds their state machine)
WEBHOOK_QUEUE = "dlpipe-webhooks"  # the rq queue of delivery jobs (rq's own keys: rq:queue:...)


def webhook(delivery_id: str) -> str:
    """Hash: one webhook delivery (one event of one job): state, round, last outcome, next attempt."""
    return f"{PREFIX}:webhook:{delivery_id}"


def webhook_attempts(delivery_id: str) -> str:
    """List: the delivery's attempts, oldest first, each a JSON object (time, status or error, duration)."""
    return f"{PREFIX}:webhook:{delivery_id}:attempts"


def job_webhook(job_id: str) -> str:
    """Hash: a job's deliveries: `latest` and `completed` (delivery ids), `gone` (the receiver said 410)."""
    return f"{PREFIX}:job:{job_id}:webhook"


def webhook_redelivered(job_id: str) -> str:
    """String (the round sent), expiring DLPIPE_WEBHOOK_REDELIVER_INTERVAL_S after a redelivery of
    the job's webhook: while it lives, `POST .../webhook/redeliver` answers 429 (shared/webhooks.py)."""
    return f"{PREFIX}:job:{job_id}:webhook:redelivered"


def model_stats(model: str) -> str:
    """Hash: counters a model worker adds per batch (batches, items, forward_ms)."""
    return f"{PREFIX}:stats:model:{model}"


# Hash: every metric counter the workers and the Lua scripts push (field per family, labels
# and bucket; shared/metrics.py), read by GET /metrics. Never expires: counters outlive restarts.
METRICS = f"{PREFIX}:metrics"


# -- The console's reads (issue 11) ---------------------------------------------------------


def job_events(job_id: str) -> str:
    """Stream: one job's events, for `GET /v1/jobs/{id}/events`: `t=o i=<item index> d=<done>` as
    an item finishes (COMPLETE_STAGE), `t=c s=<status>` as the job ends (COMPLETE_STAGE,
    CANCEL_JOB, EXPIRE_JOB). Capped (MAXLEN ~ shared/job_index.JOB_EVENTS_MAXLEN); it expires with
    the job record (the scripts give it the job's TTL)."""
    return f"{job(job_id)}:events"


def job_inputs(job_id: str) -> str:
    """Hash: a job's kept inputs (`keep_inputs`): input index -> the original bytes, or
    `blob:<index>` -> the job blob (keys.job_blob) holding that input. The scripts that end a job
    give it the job's TTL (they name it as job(id) + ':inputs', the job hash having `kept`)."""
    return f"{job(job_id)}:inputs"


def job_index(owner: str, pipeline: str | None = None, status: str | None = None) -> str:
    """Sorted set: the job ids of one owner (an API key's id, `anon` without keys), scored by
    creation (ms): all of them, or those of one pipeline and/or in one status. The job's MULTI
    (shared/jobs.py) adds it to its four sets; the scripts that change its status move it between
    the status sets, naming them from the job hash's `ix` (job_index(owner)) + `|p=<pipeline>` +
    `|s=<status>` (shared/job_index.py)."""
    key = f"{PREFIX}:index:{owner}"
    if pipeline is not None:
        key += f"|p={pipeline}"
    if status is not None:
        key += f"|s={status}"
    return key


INDEX_OWNERS = f"{PREFIX}:index-owners"  # set: every owner some job index is kept for
