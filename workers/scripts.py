"""Lua scripts: each state change of an item or job happens atomically, in one round trip."""

from shared.job_index import JOB_ENDED, JOB_EVENTS_MAXLEN, REINDEX

# Job events for webhooks: job.completed is always emitted (the notifier drops the ones no
# webhook wants); job.started and job.progress only when the job's `webhook_events` (set
# only with a webhook) names them: one HGET and a substring test. job.progress at most once
# a second per job: `progress_event_at` in the job hash holds the time of the last one.
# Every event carries its time, `at` (ms).

# Mark a job running when a worker first takes one of its items (emitting job.started).
# Its first write adds no memory (an HDEL of a field no job has), so that Redis over its
# maxmemory lets the rest through: a worker must not stall on a full Redis (shared/redis_full.py).
# It moves the job to the running sets of the job index (shared/job_index.py REINDEX).
# KEYS[1] job hash, KEYS[2] events stream; ARGV[1] now (ms), ARGV[2] job id
START_JOB = REINDEX + """
redis.call('HDEL', KEYS[1], '-')
if redis.call('HGET', KEYS[1], 'status') == 'queued' then
  redis.call('HSET', KEYS[1], 'status', 'running', 'started_at', ARGV[1])
  reindex(KEYS[1], ARGV[2], 'queued', 'running')
  local wants = redis.call('HGET', KEYS[1], 'webhook_events')
  if wants and string.find(wants, 'started', 1, true) then
    redis.call('XADD', KEYS[2], '*', 'job', ARGV[2], 'type', 'job.started', 'at', ARGV[1])
  end
end
return 1
"""

# The byte budget (DLPIPE_MAX_BACKLOG_BYTES, keys.BYTES): a job that ends, however it ends
# (COMPLETE_STAGE, CANCEL_JOB, EXPIRE_JOB), gives back its stored inputs' bytes (the job hash's
# `bytes`, written with it by shared/jobs.py) in the step that ends it: `held` less them (never
# below 0), `freed` plus them (its rate sets a byte refusal's Retry-After). Exactly once, as
# the job ends once. Prepended to those scripts (a Lua function, defined before their body).
_GIVE_BYTES_BACK = """
local function give_bytes_back(job, budget)
  local n = tonumber(redis.call('HGET', job, 'bytes') or '0')
  if n > 0 then
    if redis.call('HINCRBY', budget, 'held', -n) < 0 then redis.call('HSET', budget, 'held', 0) end
    redis.call('HINCRBY', budget, 'freed', n)
  end
end
"""

# Record one stage's result for one item, acknowledge its stream entry, and either queue
# the downstream stages that are now ready (each exactly once: a join is queued by
# whichever of its needs arrives last) or, for a final result, complete the item (once)
# and, with the last item, the job (once), emitting a completion event (and, when the job's
# webhook asks for them, a throttled progress event per finished item; see above).
#
# KEYS: 1 item hash, 2 job hash, 3 job outputs hash, 4 this stage's stream,
#       5 events stream, 6.. the downstream stages' streams (in ARGV order)
# ARGV: 1 group, 2 entry id, 3 item index, 4 now ms, 5 ttl s,
#       6 output field, 7 output payload (both unused for a final result),
#       8 final output JSON ('' unless the item is finished), 9 '1' if the item failed,
#       10 job id, 11 pipeline, 12 completion event type,
#       13 number of downstream stages, then for each: stage name, n needs, n need fields,
#       then optionally the fields of a dead-letter entry (name, value, ...): given, they
#       are added to the dead-letter stream, KEYS[6 + number of downstream stages], in the
#       same step that acknowledges the entry (an entry given up after too many
#       deliveries); giving up an entry someone acknowledged already changes nothing
# Optionally more keys, last: the pipeline's backlog counter (keys.backlog), less one when
# the item finishes (never below 0); then its drained counter (keys.drained), plus one; then
# its deadlines set (keys.deadlines), which the job leaves as it ends; then keys.METRICS: the
# item's final status (`items|<pipeline>|succeeded|failed`) and the job's
# (`jobs|<pipeline>|<status>`) are counted there (shared/metrics.py), once each, in the step
# that makes them final; then the byte budget (keys.BYTES), given the job's bytes back as it
# ends (_GIVE_BYTES_BACK); then the job's event stream (keys.job_events): an `o` entry (item
# index, done) as each item finishes, capped; the job's end runs JOB_ENDED (shared/job_index.py:
# the job index, kept inputs, the `c` entry, the job's latency).
# Returns 0 for a duplicate (already final, or the job is gone) or an item of a job that has
# ended (canceled, expired: acknowledged, nothing recorded, nothing queued), 1 stage recorded,
# 2 item finished, 3 job finished.
COMPLETE_STAGE = _GIVE_BYTES_BACK + JOB_ENDED + """
local acked = redis.call('XACK', KEYS[4], ARGV[1], ARGV[2])
local tail = 14
for d = 1, tonumber(ARGV[13]) do tail = tail + 2 + tonumber(ARGV[tail + 1]) end
if tail < #ARGV then
  if acked == 0 then return 0 end
  redis.call('XADD', KEYS[6 + tonumber(ARGV[13])], '*', unpack(ARGV, tail, #ARGV))
end
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
local state = redis.call('HGET', KEYS[2], 'status')
if state ~= 'queued' and state ~= 'running' then return 0 end
if redis.call('HEXISTS', KEYS[3], ARGV[3]) == 1 then return 0 end
if ARGV[8] == '' then
  if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
  redis.call('HSET', KEYS[1], ARGV[6], ARGV[7])
  local pos = 14
  for d = 1, tonumber(ARGV[13]) do
    local stage = ARGV[pos]
    local n = tonumber(ARGV[pos + 1])
    local ready = true
    for j = 1, n do
      if redis.call('HEXISTS', KEYS[1], ARGV[pos + 1 + j]) == 0 then ready = false end
    end
    if ready and redis.call('HSETNX', KEYS[1], 'enq:' .. stage, '1') == 1 then
      redis.call('XADD', KEYS[5 + d], '*', 'job', ARGV[10], 'index', ARGV[3],
                 'pipeline', ARGV[11], 'stage', stage)
    end
    pos = pos + 2 + n
  end
  return 1
end
redis.call('HSET', KEYS[3], ARGV[3], ARGV[8])
redis.call('DEL', KEYS[1])
local named = 5 + tonumber(ARGV[13])
if tail < #ARGV then named = named + 1 end
if #KEYS > named and redis.call('DECR', KEYS[named + 1]) < 0 then redis.call('SET', KEYS[named + 1], 0) end
-- Drain rate (keys.drained): one more item finished.
if #KEYS > named + 1 then redis.call('INCR', KEYS[named + 2]) end
-- metrics: the item's final status
local metrics = false
if #KEYS > named + 3 then metrics = KEYS[named + 4] end
if metrics then
  local item_status = 'succeeded'
  if ARGV[9] == '1' then item_status = 'failed' end
  redis.call('HINCRBY', metrics, 'items|' .. ARGV[11] .. '|' .. item_status, 1)
end
-- (end metrics)
local done = redis.call('HINCRBY', KEYS[2], 'done', 1)
if ARGV[9] == '1' then redis.call('HINCRBY', KEYS[2], 'failed', 1) end
local total = tonumber(redis.call('HGET', KEYS[2], 'total'))
local wants = redis.call('HGET', KEYS[2], 'webhook_events') or ''
local events = false
if #KEYS > named + 5 then
  events = KEYS[named + 6]
  redis.call('XADD', events, 'MAXLEN', '~', """ + str(JOB_EVENTS_MAXLEN) + """, '*', 't', 'o', 'i', ARGV[3], 'd', done)
  if done == 1 then
    local left = redis.call('PTTL', KEYS[2])
    if left > 0 then redis.call('PEXPIRE', events, left) end
  end
end
if done < total then
  if string.find(wants, 'progress', 1, true) then
    local last = tonumber(redis.call('HGET', KEYS[2], 'progress_event_at') or '0')
    if tonumber(ARGV[4]) - last >= 1000 then
      redis.call('HSET', KEYS[2], 'progress_event_at', ARGV[4])
      redis.call('XADD', KEYS[5], '*', 'job', ARGV[10], 'type', 'job.progress', 'at', ARGV[4])
    end
  end
  return 2
end
local failed = tonumber(redis.call('HGET', KEYS[2], 'failed') or '0')
local status = 'succeeded'
local err = ''
if failed == total then
  status = 'failed'
  err = 'all ' .. total .. ' items failed'
end
if redis.call('HGET', KEYS[2], 'started_at') == false then
  redis.call('HSET', KEYS[2], 'started_at', ARGV[4])
  if string.find(wants, 'started', 1, true) then
    redis.call('XADD', KEYS[5], '*', 'job', ARGV[10], 'type', 'job.started', 'at', ARGV[4])
  end
end
redis.call('HSET', KEYS[2], 'status', status, 'completed_at', ARGV[4], 'error', err)
if metrics then redis.call('HINCRBY', metrics, 'jobs|' .. ARGV[11] .. '|' .. status, 1) end
-- Deadlines (keys.deadlines): the job has ended, the sweep has nothing left to do for it.
if #KEYS > named + 2 then redis.call('ZREM', KEYS[named + 3], ARGV[10]) end
if #KEYS > named + 4 then give_bytes_back(KEYS[2], KEYS[named + 5]) end
job_ended(KEYS[2], ARGV[10], state, status, ARGV[4], ARGV[5], events, metrics)
redis.call('EXPIRE', KEYS[2], ARGV[5])
redis.call('EXPIRE', KEYS[3], ARGV[5])
redis.call('XADD', KEYS[5], '*', 'job', ARGV[10], 'type', ARGV[12], 'at', ARGV[4])
return 3
"""

# Cancel a job that has not ended: status `canceled`, completed_at, an error saying how many
# items had not finished, the backlog counter less those items, and one job.completed event;
# workers then skip its items (Store.load, COMPLETE_STAGE). A job that has ended already is
# left as it is.
# KEYS: 1 job hash, 2 job outputs hash, 3 events stream, 4 the pipeline's backlog counter,
#       5 (optional) its deadlines set (keys.deadlines), which the job leaves,
#       6 (optional) keys.METRICS: the job and its unfinished items counted as canceled,
#       7 (optional) the byte budget (keys.BYTES), given the job's bytes back (_GIVE_BYTES_BACK),
#       8 (optional) the job's event stream (keys.job_events), given its `c` entry (JOB_ENDED)
# ARGV: 1 now ms, 2 ttl s, 3 job id
# Returns {1, 'canceled'}, {0, status} if the job had ended already, {-1, ''} if there is no job.
# Its first write is the ZREM (which never adds memory): a Redis at maxmemory (noeviction)
# refuses a script's first write only if it may add memory, so a cancel still frees memory then.
CANCEL_JOB = _GIVE_BYTES_BACK + JOB_ENDED + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {-1, ''} end
if status ~= 'queued' and status ~= 'running' then return {0, status} end
if #KEYS > 4 then redis.call('ZREM', KEYS[5], ARGV[3]) end
local total = tonumber(redis.call('HGET', KEYS[1], 'total') or '0')
local left = total - tonumber(redis.call('HGET', KEYS[1], 'done') or '0')
redis.call('HSET', KEYS[1], 'status', 'canceled', 'completed_at', ARGV[1],
           'error', 'canceled: ' .. left .. ' of ' .. total .. ' items had not finished')
if left > 0 and redis.call('DECRBY', KEYS[4], left) < 0 then redis.call('SET', KEYS[4], 0) end
if KEYS[7] then give_bytes_back(KEYS[1], KEYS[7]) end
-- metrics: the job and its unfinished items, canceled
if KEYS[6] then
  local pipeline = redis.call('HGET', KEYS[1], 'pipeline') or '?'
  redis.call('HINCRBY', KEYS[6], 'jobs|' .. pipeline .. '|canceled', 1)
  if left > 0 then redis.call('HINCRBY', KEYS[6], 'items|' .. pipeline .. '|canceled', left) end
end
-- (end metrics)
job_ended(KEYS[1], ARGV[3], status, 'canceled', ARGV[1], ARGV[2], KEYS[8] or false, false)
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
redis.call('XADD', KEYS[3], '*', 'job', ARGV[3], 'type', 'job.completed', 'at', ARGV[1])
return {1, 'canceled'}
"""

# Deadlines: end a job that is due (keys.deadlines: its `timeout_s`, or its TTL), whatever the
# workers do. Its outputs not finished fail with the reason (with `timeout_s`: ARGV[4], a
# format string given the job's `timeout_s`; without: ARGV[5]), it ends by the usual rules
# (succeeded if an item succeeded, else failed), the backlog counter loses its unfinished
# items, one job.completed event; it leaves the deadlines set. Exactly once with any number of
# sweepers: a job not in the set (ended already) or not due yet is left alone.
# KEYS: 1 job hash, 2 job outputs hash, 3 events stream, 4 backlog counter, 5 deadlines set,
#       6 (optional) keys.METRICS: the job and the items it failed counted there,
#       7 (optional) the byte budget (keys.BYTES), given the job's bytes back (_GIVE_BYTES_BACK),
#       8 (optional) the job's event stream (keys.job_events), given its `c` entry (JOB_ENDED)
# ARGV: 1 now ms, 2 ttl s, 3 job id, 4 reason format (timeout_s), 5 reason (no timeout_s)
# Returns {1, items it failed, total} ended; {0, 0, 0} nothing to do; {-1, 0, 0} the job's
# record is gone while it was open (its items and bytes may still count: RECOUNT_BACKLOG,
# RECOUNT_BYTES).
EXPIRE_JOB = _GIVE_BYTES_BACK + JOB_ENDED + """
local due = redis.call('ZSCORE', KEYS[5], ARGV[3])
if not due or tonumber(due) > tonumber(ARGV[1]) then return {0, 0, 0} end
redis.call('ZREM', KEYS[5], ARGV[3])
local job = redis.call('HMGET', KEYS[1], 'status', 'total', 'done', 'failed', 'timeout_s', 'pipeline')
if not job[1] then
  redis.call('DEL', KEYS[2])
  return {-1, 0, 0}
end
if job[1] ~= 'queued' and job[1] ~= 'running' then return {0, 0, 0} end
local total = tonumber(job[2] or '0')
local reason = ARGV[5]
if job[5] then reason = string.format(ARGV[4], job[5]) end
local expired = 0
for i = 0, total - 1 do
  local output = cjson.encode({index = i, status = 'failed', error = reason})
  if redis.call('HSETNX', KEYS[2], i, output) == 1 then expired = expired + 1 end
end
local left = total - tonumber(job[3] or '0')
if left > 0 and redis.call('DECRBY', KEYS[4], left) < 0 then redis.call('SET', KEYS[4], 0) end
if KEYS[7] then give_bytes_back(KEYS[1], KEYS[7]) end
local failed = tonumber(job[4] or '0') + expired
local status, err = 'succeeded', ''
if failed >= total then status, err = 'failed', 'all ' .. total .. ' items failed' end
redis.call('HSET', KEYS[1], 'status', status, 'completed_at', ARGV[1], 'error', err,
           'done', total, 'failed', failed)
-- metrics: the items it failed, and the job
if KEYS[6] then
  local pipeline = job[6] or '?'
  if expired > 0 then redis.call('HINCRBY', KEYS[6], 'items|' .. pipeline .. '|failed', expired) end
  redis.call('HINCRBY', KEYS[6], 'jobs|' .. pipeline .. '|' .. status, 1)
end
-- (end metrics)
job_ended(KEYS[1], ARGV[3], job[1], status, ARGV[1], ARGV[2], KEYS[8] or false, KEYS[6] or false)
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
redis.call('XADD', KEYS[3], '*', 'job', ARGV[3], 'type', 'job.completed', 'at', ARGV[1])
return {1, expired, total}
"""

# Set a pipeline's backlog counter to what its open jobs hold: the sum of total - done over
# the jobs of its deadlines set still open; members whose record is gone (or ended) leave the
# set. Every change to the counter is atomic with its job's, so the sum is exact. O(open jobs);
# run when a sweep finds a job whose record vanished while open (EXPIRE_JOB -1).
# KEYS: 1 backlog counter, 2 deadlines set. ARGV: 1 the job keys' prefix (keys.job(''))
# Returns {the counter before, after, members dropped}
RECOUNT_BACKLOG = """
local before = tonumber(redis.call('GET', KEYS[1]) or '0')
local sum, dropped = 0, 0
for _, id in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  local job = redis.call('HMGET', ARGV[1] .. id, 'status', 'total', 'done')
  if job[1] == 'queued' or job[1] == 'running' then
    sum = sum + tonumber(job[2] or '0') - tonumber(job[3] or '0')
  else
    redis.call('ZREM', KEYS[2], id)
    dropped = dropped + 1
  end
end
redis.call('SET', KEYS[1], sum)
return {before, sum, dropped}
"""

# Set the byte budget's `held` (keys.BYTES) to what the open jobs hold: the sum of `bytes`
# over the jobs of the given deadlines sets that are still open. The budget is one for all
# pipelines, so every pipeline's set is given (a job of a pipeline the caller does not know is
# not counted). Every change to `held` is atomic with its job's, so the sum is exact. O(open
# jobs); run beside RECOUNT_BACKLOG (a sweep found a job whose record vanished while open).
# KEYS: 1 keys.BYTES, 2.. the deadlines sets. ARGV: 1 the job keys' prefix (keys.job(''))
# Returns {held before, after}
RECOUNT_BYTES = """
local before = tonumber(redis.call('HGET', KEYS[1], 'held') or '0')
local sum = 0
for k = 2, #KEYS do
  for _, id in ipairs(redis.call('ZRANGE', KEYS[k], 0, -1)) do
    local job = redis.call('HMGET', ARGV[1] .. id, 'status', 'bytes')
    if job[1] == 'queued' or job[1] == 'running' then sum = sum + tonumber(job[2] or '0') end
  end
end
redis.call('HSET', KEYS[1], 'held', sum)
return {before, sum}
"""

# Admission control: grant a new job of a pipeline its place, or refuse it, atomically. The
# backlog is the counter (items accepted and not finished) plus the grants still open (taken
# by requests whose job is not written yet: members `<id>:<items>[:<bytes>]` scored by when
# they lapse, so a request that dies between grant and write frees its place by itself).
# Refused when the backlog is at or over the cap: a job admitted just under the cap may take
# it over by at most its own items, never more (no two requests see the same room).
# Optionally the byte budget as well (DLPIPE_MAX_BACKLOG_BYTES, one for all pipelines: Redis's
# memory is one pool): its bytes held (keys.BYTES `held`: the stored inputs of the jobs not
# ended) plus its open grants (keys.BYTE_GRANTS, the same members, summed by their bytes),
# refused at or over the byte cap in the same way (overshoot: at most the job's own bytes).
# The job's MULTI (shared/jobs.py) removes the member from both sets as it counts the job.
# KEYS: 1 backlog counter, 2 grants sorted set; optionally 3 keys.BYTES, 4 keys.BYTE_GRANTS
# ARGV: 1 now ms, 2 grant life ms, 3 cap, 4 grant id, 5 the job's items; with the byte keys
#       6 the byte cap, 7 the job's bytes
# Returns {1, backlog before it} granted, {0, backlog} refused; with the byte keys a third
# element, the bytes held before it (counter + open byte grants).
ADMIT = """
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
local backlog = math.max(0, tonumber(redis.call('GET', KEYS[1]) or '0'))
for _, member in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  backlog = backlog + tonumber(string.match(member, '^[^:]*:(%d+)') or '0')
end
local reply = {1, backlog}
if backlog >= tonumber(ARGV[3]) then reply[1] = 0 end
local member = ARGV[4] .. ':' .. ARGV[5]
if #KEYS > 2 then
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', ARGV[1])
  local held = math.max(0, tonumber(redis.call('HGET', KEYS[3], 'held') or '0'))
  for _, grant in ipairs(redis.call('ZRANGE', KEYS[4], 0, -1)) do
    held = held + tonumber(string.match(grant, ':(%d+)$') or '0')
  end
  reply[3] = held
  if held >= tonumber(ARGV[6]) then reply[1] = 0 end
  member = member .. ':' .. ARGV[7]
end
if reply[1] == 0 then return reply end
local lapse = tonumber(ARGV[1]) + tonumber(ARGV[2])
redis.call('ZADD', KEYS[2], lapse, member)
redis.call('PEXPIRE', KEYS[2], ARGV[2])
if #KEYS > 2 then
  redis.call('ZADD', KEYS[4], lapse, member)
  redis.call('PEXPIRE', KEYS[4], ARGV[2])
end
return reply
"""

# Claim entries of a consumer group for one consumer, each with the number of times it
# was delivered before, counting this claim as one more delivery. Either (ARGV[4] not
# '') the next entries idle for at least ARGV[3] ms from any consumer (XAUTOCLAIM from
# cursor ARGV[4], at most ARGV[5]), or (ARGV[4] == '') the ids ARGV[6..] that are still
# pending for this very consumer. JUSTID first, so an entry deleted from the stream while
# pending is seen in Redis 6.2 too (without it 6.2 answers a nil in place of the entry,
# id unknown); deleted entries are acknowledged (7.x drops them from the PEL itself and
# lists them in XAUTOCLAIM's third element).
#
# KEYS: 1 stream. ARGV: 1 group, 2 consumer, 3 min idle ms, 4 cursor or '', 5 count, 6.. ids
# Returns {next cursor ('0-0': the scan is done), {{id, deliveries before, fields}...}, {deleted id...}}
RECLAIM = """
local ids, cursor, deleted = {}, '0-0', {}
if ARGV[4] ~= '' then
  local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], 'COUNT', ARGV[5], 'JUSTID')
  cursor, ids = r[1], r[2]
  for _, id in ipairs(r[3] or {}) do deleted[#deleted + 1] = id end
else
  for i = 6, #ARGV do
    local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
    if p[1] and p[1][2] == ARGV[2] then ids[#ids + 1] = ARGV[i] end
  end
end
local claimed = {}
for _, id in ipairs(ids) do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
  local before = 0
  if p[1] then before = tonumber(p[1][4]) end
  local e = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id)
  if e[1] then
    claimed[#claimed + 1] = {id, before, e[1][2]}
  else
    redis.call('XACK', KEYS[1], ARGV[1], id)
    deleted[#deleted + 1] = id
  end
end
return {cursor, claimed, deleted}
"""

# Give up one stream entry that has no item to fail (a notifier event): acknowledge it
# and copy it to the dead-letter stream, atomically.
# KEYS: 1 stream, 2 dead-letter stream. ARGV: 1 group, 2 entry id, 3.. fields (name, value, ...)
DEAD_LETTER = """
local acked = redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
if acked == 0 then return 0 end
redis.call('XADD', KEYS[2], '*', unpack(ARGV, 3, #ARGV))
return 1
"""

# Trim a stream of the entries every consumer group is done with: XTRIM MINID to the
# lowest of, over every group, its oldest pending entry and its last-delivered id (entries
# after it are not read yet; the last-delivered one itself is kept, which costs one entry
# and needs no id arithmetic). A stream with no group is left alone: nobody has read it
# yet. One script, so no entry can be delivered or acknowledged between the look and the
# trim; what is added meanwhile has a higher id than the floor. Works on Redis 6.2 and 7.x.
#
# KEYS: 1 stream. Returns {floor id ('' when nothing was trimmed), entries removed}
TRIM_STREAM = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'', 0} end
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function lower(a, b)
  if a == nil then return b end
  local ams, aseq = parse(a)
  local bms, bseq = parse(b)
  if bms < ams or (bms == ams and bseq < aseq) then return b end
  return a
end
local floor = nil
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local info = {}
  for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
  floor = lower(floor, info['last-delivered-id'])
  if tonumber(info['pending']) > 0 then
    local summary = redis.call('XPENDING', KEYS[1], info['name'])
    if summary[2] then floor = lower(floor, summary[2]) end
  end
end
if floor == nil then return {'', 0} end
return {floor, redis.call('XTRIM', KEYS[1], 'MINID', floor)}
"""

# Metrics (GET /metrics): the backlog of streams, each for the consumer group that works it,
# read in one step: {lag, pending}. `pending`: entries delivered to a consumer and not
# acknowledged; lag: entries not delivered yet. Lag is XINFO GROUPS's `lag` (Redis >= 7.0) when
# Redis knows it; else 0 when the group has read up to the last entry, else the entries after
# its last-delivered id, counted up to ARGV[1] (Redis 6.2 has no `lag`: bounded work at scrape).
# A stream with no such group yet (no worker has started) has every entry waiting: lag = XLEN.
# Also the ids of the oldest entry pending ('' none) and of the oldest not delivered yet ('' none):
# the older of them is the stream's oldest waiting work (GET /v1/status).
# KEYS: the streams. ARGV: 1 the most entries counted per stream, 2.. the group of each stream.
# Returns per stream {lag, pending, oldest pending id, oldest undelivered id}.
STREAM_BACKLOG = """
local out = {}
for k = 1, #KEYS do
  local lag, pending = redis.call('XLEN', KEYS[k]), 0
  local first_pending, first_waiting, grouped = '', '', false
  if lag > 0 or redis.call('EXISTS', KEYS[k]) == 1 then
    for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[k])) do
      local info = {}
      for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
      if info['name'] == ARGV[k + 1] then
        pending, lag = info['pending'], info['lag']
        if type(lag) ~= 'number' then
          local last = nil
          local s = redis.call('XINFO', 'STREAM', KEYS[k])
          for i = 1, #s, 2 do if s[i] == 'last-generated-id' then last = s[i + 1] end end
          if info['last-delivered-id'] == last then
            lag = 0
          else
            lag = #redis.call('XRANGE', KEYS[k], '(' .. info['last-delivered-id'], '+', 'COUNT', ARGV[1])
          end
        end
        if tonumber(pending) > 0 then
          local summary = redis.call('XPENDING', KEYS[k], ARGV[k + 1])
          if summary[2] then first_pending = summary[2] end
        end
        local next_one = redis.call('XRANGE', KEYS[k], '(' .. info['last-delivered-id'], '+', 'COUNT', 1)
        if next_one[1] then first_waiting = next_one[1][1] end
        grouped = true
      end
    end
    if not grouped then
      local first = redis.call('XRANGE', KEYS[k], '-', '+', 'COUNT', 1)
      if first[1] then first_waiting = first[1][1] end
    end
  end
  out[k] = {lag, pending, first_pending, first_waiting}
end
return out
"""

# Read a job's (or a delivery's) keys in one atomic step that still works while Redis is over
# its maxmemory (noeviction): a MULTI is then refused whole, reads and all (Redis refuses to
# queue any command past maxmemory), a script's reads are not. HGETALL of each hash, then
# LRANGE 0 -1 of each list (services/api/redis_memory.py).
# KEYS: the hashes, then the lists. ARGV: 1 how many hashes
# Returns one reply per key: {field, value, ...} for a hash, {item, ...} for a list.
READ = """
local out = {}
for k = 1, #KEYS do
  if k <= tonumber(ARGV[1]) then
    out[k] = redis.call('HGETALL', KEYS[k])
  else
    out[k] = redis.call('LRANGE', KEYS[k], 0, -1)
  end
end
return out
"""
