-- Deadlines: end a job that is due (keys.deadlines: its `timeout_s`, or its TTL), whatever the
-- workers do. Its outputs not finished fail with the reason (with `timeout_s`: ARGV[4], a
-- format string given the job's `timeout_s`; without: ARGV[5]), it ends by the usual rules
-- (succeeded if an item succeeded, else failed), the backlog counter loses its unfinished
-- items, one job.completed event; it leaves the deadlines set. Exactly once with any number of
-- sweepers: a job not in the set (ended already) or not due yet is left alone.
-- KEYS: 1 job hash, 2 job outputs hash, 3 events stream, 4 backlog counter, 5 deadlines set,
--       6 (optional) keys.METRICS: the job and the items it failed counted there,
--       7 (optional) the byte budget (keys.BYTES), given the job's bytes back (_GIVE_BYTES_BACK),
--       8 (optional) the job's event stream (keys.job_events), given its `c` entry (JOB_ENDED)
--       9 (optional) the job's files hash (keys.job_files), expiring with its outputs (deleted
--         with them when the job's record is gone)
-- ARGV: 1 now ms, 2 ttl s, 3 job id, 4 reason format (timeout_s), 5 reason (no timeout_s)
-- Returns {1, items it failed, total} ended; {0, 0, 0} nothing to do; {-1, 0, 0} the job's
-- record is gone while it was open (its items and bytes may still count: RECOUNT_BACKLOG,
-- RECOUNT_BYTES).
--! include give_bytes_back
--! include job_ended


local due = redis.call('ZSCORE', KEYS[5], ARGV[3])
if not due or tonumber(due) > tonumber(ARGV[1]) then return {0, 0, 0} end
redis.call('ZREM', KEYS[5], ARGV[3])
local job = redis.call('HMGET', KEYS[1], 'status', 'total', 'done', 'failed', 'timeout_s', 'pipeline')
if not job[1] then
  redis.call('DEL', KEYS[2])
  if KEYS[8] then redis.call('DEL', KEYS[8]) end
  if KEYS[9] then redis.call('DEL', KEYS[9]) end
  return {-1, 0, 0}
end
if job[1] ~= '${JobStatus.queued}' and job[1] ~= '${JobStatus.running}' then return {0, 0, 0} end
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
if KEYS[9] then redis.call('EXPIRE', KEYS[9], ARGV[2]) end
redis.call('XADD', KEYS[3], '*', 'job', ARGV[3], 'type', '${EventType.completed}', 'at', ARGV[1])
return {1, expired, total}
