"""Every Lua script's text (shared/redis/lua/<name>.lua, through the loader), and their
registration, once per client.

Each script does one state change of an item, a job, a delivery or a stream atomically, in one
round trip; what each takes (KEYS, ARGV) and returns is written at the top of its .lua file.
Python calls each through its one typed function, beside the others of its noun (jobs.py,
job_reads.py, admission.py, streams.py, webhooks.py, heartbeats.py in this package): named
arguments in, KEYS and ARGV built there and nowhere else, a `ScriptCall` out, whose reply reads
as a typed result (a str enum, a small dataclass). A call runs on a sync client (`run`), an
async one (`run_async`), a redis-py pipeline (`queue`/`queue_async`, then `read` the reply),
or workers/scripted_pipeline.py (`pipe.call`); each through `registered(client, TEXT)` (a
redis-py Script, made once per client). Tests of a script itself may `client.eval(TEXT, ...)`.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from shared.redis.loader import source

# -- jobs and their items (the workers, the API's cancel and deadline sweep) ----------------
START_JOB = source("start_job")
COMPLETE_STAGE = source("complete_stage")
CANCEL_JOB = source("cancel_job")
EXPIRE_JOB = source("expire_job")
RECOUNT_BACKLOG = source("recount_backlog")
RECOUNT_BYTES = source("recount_bytes")
JOB_SNAPSHOT = source("job_snapshot")  # GET /v1/jobs/{id}/events (services/api/sse.py)
JOB_PAGE = source("job_page")  # GET /v1/jobs (shared/job_index.py)
READ = source("read_keys")  # reads that work while Redis is full (services/api/redis_memory.py)

# -- admission (services/api/admission.py) --------------------------------------------------
ADMIT = source("admit")
IDEMPOTENCY_RELEASE = source("idempotency_release")

# -- streams (the workers' reads, reclaims, trims; the API's metrics) -----------------------
READ_BY_PRIORITY = source("read_by_priority")
RECLAIM = source("reclaim")
DEAD_LETTER = source("dead_letter")
TRIM_STREAM = source("trim_stream")
STREAM_BACKLOG = source("stream_backlog")
HEARTBEAT = source("heartbeat")  # shared/heartbeat.py

# -- webhook deliveries (shared/webhooks.py: the state machine) ------------------------------
WEBHOOK_CREATE = source("webhook_create")
WEBHOOK_BEGIN = source("webhook_begin")
WEBHOOK_INTERRUPT = source("webhook_interrupt")
WEBHOOK_FINISH = source("webhook_finish")
WEBHOOK_REDELIVER = source("webhook_redeliver")

_REGISTERED: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()


def registered(client: Any, script: str) -> Any:
    """`client.register_script(script)`, made once per client (sync or async redis-py, a
    fakeredis one) and kept as long as the client lives."""
    try:
        cache = _REGISTERED.setdefault(client, {})
    except TypeError:  # a client that takes no weak reference: registered afresh each time
        return client.register_script(script)
    found = cache.get(script)
    if found is None:
        found = cache[script] = client.register_script(script)
    return found


T = TypeVar("T")


@dataclass(frozen=True)
class ScriptCall(Generic[T]):
    """One call of a script: its KEYS and ARGV (built by the script's typed function) and how
    its reply reads (`read`: the raw reply -> the typed result)."""

    text: str
    keys: list[Any]
    args: list[Any]
    read: Callable[[Any], T]

    def run(self, client: Any) -> T:
        """Run it on a sync client."""
        return self.read(registered(client, self.text)(keys=self.keys, args=self.args))

    async def run_async(self, client: Any) -> T:
        """Run it on an async client."""
        return self.read(await registered(client, self.text)(keys=self.keys, args=self.args))

    def queue(self, pipe: Any) -> None:
        """Add it to a sync redis-py pipeline (or transaction); `read` its reply from execute()."""
        registered(pipe, self.text)(keys=self.keys, args=self.args, client=pipe)

    async def queue_async(self, pipe: Any) -> None:
        """Add it to an async redis-py pipeline; `read` its reply from execute()."""
        await registered(pipe, self.text)(keys=self.keys, args=self.args, client=pipe)

    def eval_on(self, pipe: Any) -> None:
        """Add it as a plain EVAL to a sync or async pipeline (no SCRIPT EXISTS round trip)."""
        pipe.eval(self.text, len(self.keys), *self.keys, *self.args)
