-- Cancel a job that has not ended: status `canceled`, completed_at, an error saying how many
-- items had not finished, the backlog counter less those items, and one job.completed event;
-- workers then skip its items (Store.load, COMPLETE_STAGE). A job that has ended already is
-- left as it is.
-- KEYS: 1 job hash, 2 job outputs hash, 3 events stream, 4 the pipeline's backlog counter,
--       5 (optional) its deadlines set (keys.deadlines), which the job leaves,
--       6 (optional) keys.METRICS: the job and its unfinished items counted as canceled,
--       7 (optional) the byte budget (keys.BYTES), given the job's bytes back (_GIVE_BYTES_BACK),
--       8 (optional) the job's event stream (keys.job_events), given its `c` entry (JOB_ENDED)
--       9 (optional) the job's files hash (keys.job_files), expiring with its outputs
-- ARGV: 1 now ms, 2 ttl s, 3 job id
-- Returns {1, '${JobStatus.canceled}'}, {0, status} if the job had ended already, {-1, ''} if there is no job.
-- Its first write is the ZREM (which never adds memory): a Redis at maxmemory (noeviction)
-- refuses a script's first write only if it may add memory, so a cancel still frees memory then.
--! include give_bytes_back
--! include job_ended


local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {-1, ''} end
if status ~= '${JobStatus.queued}' and status ~= '${JobStatus.running}' then return {0, status} end
if #KEYS > 4 then redis.call('ZREM', KEYS[5], ARGV[3]) end
local total = tonumber(redis.call('HGET', KEYS[1], 'total') or '0')
local left = total - tonumber(redis.call('HGET', KEYS[1], 'done') or '0')
redis.call('HSET', KEYS[1], 'status', '${JobStatus.canceled}', 'completed_at', ARGV[1],
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
job_ended(KEYS[1], ARGV[3], status, '${JobStatus.canceled}', ARGV[1], ARGV[2], KEYS[8] or false, false)
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
if KEYS[9] then redis.call('EXPIRE', KEYS[9], ARGV[2]) end
redis.call('XADD', KEYS[3], '*', 'job', ARGV[3], 'type', '${EventType.completed}', 'at', ARGV[1])
return {1, '${JobStatus.canceled}'}
