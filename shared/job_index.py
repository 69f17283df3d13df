"""The job index: each owner's jobs, newest first, for `GET /v1/jobs`, with no SCAN.

Four sorted sets per job (keys.job_index), scored by its creation (ms): its owner's, its owner's
of its pipeline, and the two of its status (all pipelines, its pipeline). The job's MULTI
(shared/jobs.py index_new_job) adds them and records `ix` (the owner's set, the prefix of the
others) in the job hash; the scripts that change its status (workers/scripts.py) move it between
the status sets with REINDEX, in the step that changes it. A job whose record has no `ix` (written
before the index existed) is in no set.

Expiry: the job record expires (its TTL); its index entries are dropped when a listing meets
them (JOB_PAGE drops the ids whose record is gone from the set it reads) and by score: nothing
created more than `2 * ttl + OPEN_JOB_GRACE_S` ago can still exist (an open job ends by its TTL,
then is kept a TTL more), so JOB_PAGE trims the set it reads and the API's sweep trims every set
below that (trim_index).

The scripts that end a job also run JOB_ENDED (prepended to them, as _GIVE_BYTES_BACK): the index
move, the kept inputs' TTL (keep_inputs), the job's `completed` event (keys.job_events) and its
latency (metrics.JOB_SECONDS).
"""

from __future__ import annotations

import re
from typing import Any

from shared import keys, metrics
from shared.errors import InvalidRequest
from shared.messages import JobStatus

JOB_EVENTS_MAXLEN = 1000  # a job's event stream keeps about this many entries (MAXLEN ~)
OWNERS_KEY = keys.INDEX_OWNERS

# Move a job between the status sets of its index (keys.job_index): from `from` to `to`. A job
# with no `ix` in its hash is not indexed: nothing to do.
REINDEX = """
local function reindex(job, id, from, to)
  local f = redis.call('HMGET', job, 'ix', 'created_at', 'pipeline')
  if not f[1] then return end
  for _, scope in ipairs({f[1], f[1] .. '|p=' .. f[3]}) do
    redis.call('ZREM', scope .. '|s=' .. from, id)
    redis.call('ZADD', scope .. '|s=' .. to, f[2], id)
  end
end
"""


def _lua_buckets() -> str:
    pairs = ", ".join(f"{{{b!r}, '{metrics.le_text(b)}'}}" for b in metrics.JOB_BUCKETS_S)
    return "{" + pairs + "}"


# Everything a job's end does besides its own script's work: the index (REINDEX), the kept
# inputs (`kept` in the job hash: job .. ':inputs' is keys.job_inputs) given the job's TTL, the
# `completed` entry of its event stream (events: keys.job_events, or false), and its latency
# (now - created_at) in metrics.JOB_SECONDS (metrics: keys.METRICS, or false; not for canceled).
JOB_ENDED = REINDEX + """
local job_buckets = """ + _lua_buckets() + """
local function job_ended(job, id, from, to, now, ttl, events, metrics)
  reindex(job, id, from, to)
  if redis.call('HEXISTS', job, 'kept') == 1 then redis.call('EXPIRE', job .. ':inputs', ttl) end
  if events then
    redis.call('XADD', events, 'MAXLEN', '~', """ + str(JOB_EVENTS_MAXLEN) + """, '*', 't', 'c', 's', to)
    redis.call('EXPIRE', events, ttl)
  end
  if metrics and to ~= 'canceled' then
    local f = redis.call('HMGET', job, 'created_at', 'pipeline')
    local s = math.max(0, tonumber(now) - tonumber(f[1] or now)) / 1000
    local le = '+Inf'
    for _, b in ipairs(job_buckets) do
      if s <= b[1] then le = b[2] break end
    end
    redis.call('HINCRBY', metrics, 'job_s|' .. f[2] .. '|' .. le, 1)
    redis.call('HINCRBYFLOAT', metrics, 'job_s|' .. f[2] .. '|sum', s)
  end
end
"""

# One page of an index set, newest first, with the rows' summaries, in one step.
# KEYS: 1 the index set. ARGV: 1 cursor member ('' from the start), 2 cursor score, 3 limit,
#       4 most members to look at, 5 status the rows must have ('' any), 6 job key prefix
#       (keys.job('')), 7 scores below this are dropped first (nothing so old exists)
# Returns {rows, next cursor member or '', its score}; a row is {id, pipeline, status, done,
# total, created_at, completed_at, metadata} (false where a field is missing). Members whose
# record is gone leave the set.
JOB_PAGE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[7])
local limit, budget = tonumber(ARGV[3]), tonumber(ARGV[4])
local start = 0
if ARGV[1] ~= '' then
  local rank = redis.call('ZREVRANK', KEYS[1], ARGV[1])
  if rank then
    start = rank + 1
  else
    start = redis.call('ZCOUNT', KEYS[1], '(' .. ARGV[2], '+inf')
    for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[2], ARGV[2])) do
      if m > ARGV[1] then start = start + 1 end
    end
  end
end
local rows, gone, looked = {}, {}, 0
local last, last_score = '', ''
local total = redis.call('ZCARD', KEYS[1])
while #rows < limit and looked < budget and start < total do
  local n = math.min(limit - #rows + 8, budget - looked)
  local found = redis.call('ZREVRANGE', KEYS[1], start, start + n - 1, 'WITHSCORES')
  if #found == 0 then break end
  for i = 1, #found, 2 do
    local id = found[i]
    looked = looked + 1
    start = start + 1
    last, last_score = id, found[i + 1]
    local f = redis.call('HMGET', ARGV[6] .. id, 'id', 'pipeline', 'status', 'done', 'total',
                         'created_at', 'completed_at', 'metadata')
    if not f[3] then
      gone[#gone + 1] = id
    elseif ARGV[5] == '' or f[3] == ARGV[5] then
      rows[#rows + 1] = f
    end
    if #rows >= limit or looked >= budget then break end
  end
end
for _, id in ipairs(gone) do redis.call('ZREM', KEYS[1], id) end
if start >= total then last, last_score = '', '' end
return {rows, last, last_score}
"""


def index_new_job(pipe: Any, job_id: str, owner: str, pipeline: str, created_ms: int) -> dict[str, str]:
    """Add a new (queued) job to its owner's index sets (in the job's MULTI); returns the fields
    its hash gets (`owner`, and `ix`, which the status scripts name the sets from)."""
    status = JobStatus.queued.value
    for key in (
        keys.job_index(owner),
        keys.job_index(owner, status=status),
        keys.job_index(owner, pipeline),
        keys.job_index(owner, pipeline, status),
    ):
        pipe.zadd(key, {job_id: created_ms})
    pipe.sadd(OWNERS_KEY, owner)
    return {"owner": owner, "ix": keys.job_index(owner)}


def oldest_possible_ms(now_ms: int, ttl_s: int, grace_s: int) -> int:
    """No job created before this (ms) can still exist: an open job ends by its TTL's end (the
    sweep), kept `grace_s` more at most while open, then a TTL once ended."""
    return now_ms - (2 * ttl_s + grace_s) * 1000


def index_keys(owner: str, pipelines: list[str]) -> list[str]:
    """Every index set of one owner, for these pipelines."""
    statuses: list[str | None] = [None, *(s.value for s in JobStatus)]
    return [keys.job_index(owner, p, s) for p in [None, *pipelines] for s in statuses]


def trim_index(pipe: Any, owners: list[str], pipelines: list[str], before_ms: int) -> None:
    """Drop from every index set the members scored below `before_ms` (they cannot exist)."""
    for owner in owners:
        for key in index_keys(owner, pipelines):
            pipe.zremrangebyscore(key, "-inf", f"({before_ms}")


CURSOR_PATTERN = r"^[0-9]{1,17}\.[A-Za-z0-9_-]{1,64}$"  # `<score>.<job id>`: opaque to clients
_CURSOR = re.compile(CURSOR_PATTERN)


def encode_cursor(member: str, score: str) -> str:
    return f"{int(float(score))}.{member}"


def decode_cursor(cursor: str) -> tuple[str, str]:
    """(member, score) of a cursor from encode_cursor; InvalidRequest if it is not one."""
    if not _CURSOR.match(cursor):
        raise InvalidRequest("cursor: not a cursor this API gave", field="cursor")
    score, _, member = cursor.partition(".")
    return member, score
