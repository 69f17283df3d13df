"""Lua scripts: each state change of an item or job happens atomically, in one round trip."""

# Mark a job running when a worker first takes one of its items.
# KEYS[1] job hash; ARGV[1] now (ms)
START_JOB = """
if redis.call('HGET', KEYS[1], 'status') == 'queued' then
  redis.call('HSET', KEYS[1], 'status', 'running', 'started_at', ARGV[1])
end
return 1
"""

# Record one stage's result for one item, acknowledge its stream entry, and either queue
# the downstream stages that are now ready (each exactly once: a join is queued by
# whichever of its needs arrives last) or, for a final result, complete the item (once)
# and, with the last item, the job (once), emitting a completion event.
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
# Returns 0 for a duplicate (already final, or the job is gone), 1 stage recorded,
# 2 item finished, 3 job finished.
COMPLETE_STAGE = """
local acked = redis.call('XACK', KEYS[4], ARGV[1], ARGV[2])
local tail = 14
for d = 1, tonumber(ARGV[13]) do tail = tail + 2 + tonumber(ARGV[tail + 1]) end
if tail < #ARGV then
  if acked == 0 then return 0 end
  redis.call('XADD', KEYS[6 + tonumber(ARGV[13])], '*', unpack(ARGV, tail, #ARGV))
end
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
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
local done = redis.call('HINCRBY', KEYS[2], 'done', 1)
if ARGV[9] == '1' then redis.call('HINCRBY', KEYS[2], 'failed', 1) end
local total = tonumber(redis.call('HGET', KEYS[2], 'total'))
if done < total then return 2 end
local failed = tonumber(redis.call('HGET', KEYS[2], 'failed') or '0')
local status = 'succeeded'
local err = ''
if failed == total then
  status = 'failed'
  err = 'all ' .. total .. ' items failed'
end
if redis.call('HGET', KEYS[2], 'started_at') == false then
  redis.call('HSET', KEYS[2], 'started_at', ARGV[4])
end
redis.call('HSET', KEYS[2], 'status', status, 'completed_at', ARGV[4], 'error', err)
redis.call('EXPIRE', KEYS[2], ARGV[5])
redis.call('EXPIRE', KEYS[3], ARGV[5])
redis.call('XADD', KEYS[5], '*', 'job', ARGV[10], 'type', ARGV[12])
return 3
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
