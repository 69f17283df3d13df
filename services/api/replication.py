"""What the API answers is on DLPIPE_REDIS_MIN_REPLICAS replicas first (Redis WAIT), so a
failover cannot take back an answer already given (docs/reliability.md: Redis failover).

Replication is asynchronous: a write the primary answered may not have reached a replica when
the primary dies, and the replica the sentinels promote never had it. With min replicas set,
each answer that promises something waits for its write to be acknowledged by that many
replicas (shared/redis_conn.py wait_after: WAIT on the connection that wrote, right after it):

- a submit's 202 (services/api/job_writer.py). A WAIT that times out means: the primary has the
  job, its replicas may not. The answer is a 503 with Retry-After that names the job. With an
  Idempotency-Key the job is kept (it runs; a failover may still lose it) and the client's retry
  with the same key answers 202 for that same job once its write is confirmed (confirm_replay),
  or 503 again. Without a key the client cannot find the job again: it is canceled (it ends as
  `canceled`, its webhook gets that one event), and the client submits afresh.
- an Idempotency-Key's replay of that 202 (confirm_replay: the record read, a probe written and
  WAITed for, on one connection).
- a cancel's 200 (services/api/cancel.py): a timeout answers 503; the job is canceled on the
  primary, and a retry answers 409 (ended: canceled) once it is.
"""

from __future__ import annotations

import logging
from typing import Any

from redis.exceptions import RedisError

from shared import keys, redis_conn
from shared.errors import Unavailable
from shared.messages import now_ms
from shared.settings import Settings

log = logging.getLogger(__name__)

RETRY_AFTER_S = 1
PROBE_TTL_MS = 60_000


def unconfirmed(what: str, seen: redis_conn.Replicated, advice: str) -> Unavailable:
    """The 503 of an answer whose write the replicas did not confirm."""
    return Unavailable(
        f"redis: {what}, but not confirmed on DLPIPE_REDIS_MIN_REPLICAS={seen.wanted} replicas "
        f"({seen.describe()}); {advice}",
        retry_after_s=RETRY_AFTER_S,
    )


async def confirm_replay(client: Any, settings: Settings, redis_key: str, job_id: str) -> None:
    """Before replaying an Idempotency-Key's 202: is that key's record (written with its job, in one
    MULTI) on the replicas? Read it again, write a probe and WAIT, all on one connection (one
    server); 503 if not confirmed."""
    if settings.redis_min_replicas == 0:
        return
    pipe = client.pipeline(transaction=False)
    seen = redis_conn.wait_after(pipe, settings)
    pipe.get(redis_key)
    pipe.set(keys.REPLICATION_PROBE, now_ms(), px=PROBE_TTL_MS)  # a write: WAIT waits for it
    try:
        record, _ = await pipe.execute()
    except (RedisError, OSError) as exc:
        raise Unavailable(f"redis: cannot confirm job {job_id} ({exc}); retry", RETRY_AFTER_S) from None
    if record is None:  # gone meanwhile (a failover lost it): the retry after this one writes anew
        raise Unavailable(f"redis: job {job_id} was lost (a failover?); retry", RETRY_AFTER_S)
    if not seen.confirmed:
        raise unconfirmed(f"job {job_id} is written", seen, "retry with the same Idempotency-Key")
