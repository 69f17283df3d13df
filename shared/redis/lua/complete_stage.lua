-- Record one stage's result for one item, acknowledge its stream entry, and either queue
-- the downstream stages that are now ready (each exactly once: a join is queued by
-- whichever of its needs arrives last) or, for a final result, complete the item (once)
-- and, with the last item, the job (once), emitting a completion event (and, when the job's
-- webhook asks for them, a throttled progress event per finished item; see above).
--
-- KEYS: 1 item hash, 2 job hash, 3 job outputs hash, 4 this stage's stream,
--       5 events stream, 6.. the downstream stages' streams (in ARGV order), of the item's
--       priority (the stream of KEYS[4]'s priority: keys.priority_stream_name), so an item keeps
--       its job's priority at every stage
-- ARGV: 1 group, 2 entry id, 3 item index, 4 now ms, 5 ttl s,
--       6 output field, 7 output payload (for a final result: its files, see below),
--       8 final output JSON ('' unless the item is finished), 9 '1' if the item failed,
--       10 job id, 11 pipeline, 12 completion event type,
--       13 number of downstream stages, then for each: stage name, n needs, n need fields,
--       then optionally the fields of a dead-letter entry (name, value, ...): given, they
--       are added to the dead-letter stream, KEYS[6 + number of downstream stages], in the
--       same step that acknowledges the entry (an entry given up after too many
--       deliveries); giving up an entry someone acknowledged already changes nothing
-- Optionally more keys, last: the pipeline's backlog counter (keys.backlog), less one when
-- the item finishes (never below 0); then its drained counter (keys.drained), plus one; then
-- its deadlines set (keys.deadlines), which the job leaves as it ends; then keys.METRICS: the
-- item's final status (`items|<pipeline>|succeeded|failed`) and the job's
-- (`jobs|<pipeline>|<status>`) are counted there (shared/metrics.py), once each, in the step
-- that makes them final; then the byte budget (keys.BYTES), given the job's bytes back as it
-- ends (_GIVE_BYTES_BACK); then the job's event stream (keys.job_events): an `o` entry (item
-- index, done) as each item finishes, capped; the job's end runs JOB_ENDED (shared/job_index.py:
-- the job index, kept inputs, the `c` entry, the job's latency); then the job's files hash
-- (keys.job_files). With it, a final result
-- that succeeded stores its files (shared/files.py): ARGV[6] their manifest, `<field> <size>`
-- pairs space-separated ('' none), ARGV[7] their stored bytes concatenated in that order; their
-- bytes count in the job's `bytes` and the budget's `held` while the job is open, the hash lives
-- as long as the job hash then, and expires with the job's outputs as it ends.
-- Returns 0 for a duplicate (already final, or the job is gone) or an item of a job that has
-- ended (canceled, expired: acknowledged, nothing recorded, nothing queued), 1 stage recorded,
-- 2 item finished, 3 job finished.
--! include give_bytes_back
--! include job_ended


local acked = redis.call('XACK', KEYS[4], ARGV[1], ARGV[2])
local tail = 14
for d = 1, tonumber(ARGV[13]) do tail = tail + 2 + tonumber(ARGV[tail + 1]) end
if tail < #ARGV then
  if acked == 0 then return 0 end
  redis.call('XADD', KEYS[6 + tonumber(ARGV[13])], '*', unpack(ARGV, tail, #ARGV))
end
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
local state = redis.call('HGET', KEYS[2], 'status')
if state ~= '${JobStatus.queued}' and state ~= '${JobStatus.running}' then return 0 end
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
-- Files (keys.job_files): the item's, stored with its output.
if #KEYS > named + 6 and ARGV[6] ~= '' and ARGV[9] ~= '1' then
  local pos = 1
  for field, size in string.gmatch(ARGV[6], '(%S+) (%d+)') do
    local stop = pos + tonumber(size)
    redis.call('HSET', KEYS[named + 7], field, string.sub(ARGV[7], pos, stop - 1))
    pos = stop
  end
  redis.call('HINCRBY', KEYS[2], 'bytes', pos - 1)
  redis.call('HINCRBY', KEYS[named + 5], 'held', pos - 1)
  local left = redis.call('PTTL', KEYS[2])
  if left > 0 then redis.call('PEXPIRE', KEYS[named + 7], left) end
end
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
  redis.call('XADD', events, 'MAXLEN', '~', ${JOB_EVENTS_MAXLEN}, '*', 't', 'o', 'i', ARGV[3], 'd', done)
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
      redis.call('XADD', KEYS[5], '*', 'job', ARGV[10], 'type', '${EventType.progress}', 'at', ARGV[4])
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
    redis.call('XADD', KEYS[5], '*', 'job', ARGV[10], 'type', '${EventType.started}', 'at', ARGV[4])
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
if #KEYS > named + 6 then redis.call('EXPIRE', KEYS[named + 7], ARGV[5]) end
redis.call('XADD', KEYS[5], '*', 'job', ARGV[10], 'type', ARGV[12], 'at', ARGV[4])
return 3
