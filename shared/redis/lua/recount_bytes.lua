-- Set the byte budget's `held` (keys.BYTES) to what the open jobs hold: the sum of `bytes`
-- over the jobs of the given deadlines sets that are still open. The budget is one for all
-- pipelines, so every pipeline's set is given (a job of a pipeline the caller does not know is
-- not counted). Every change to `held` is atomic with its job's, so the sum is exact. O(open
-- jobs); run beside RECOUNT_BACKLOG (a sweep found a job whose record vanished while open).
-- KEYS: 1 keys.BYTES, 2.. the deadlines sets. ARGV: 1 the job keys' prefix (keys.job(''))
-- Returns {held before, after}

local before = tonumber(redis.call('HGET', KEYS[1], 'held') or '0')
local sum = 0
for k = 2, #KEYS do
  for _, id in ipairs(redis.call('ZRANGE', KEYS[k], 0, -1)) do
    local job = redis.call('HMGET', ARGV[1] .. id, 'status', 'bytes')
    if job[1] == '${JobStatus.queued}' or job[1] == '${JobStatus.running}' then sum = sum + tonumber(job[2] or '0') end
  end
end
redis.call('HSET', KEYS[1], 'held', sum)
return {before, sum}
