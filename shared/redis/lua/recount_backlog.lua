-- Set a pipeline's backlog counter to what its open jobs hold: the sum of total - done over
-- the jobs of its deadlines set still open; members whose record is gone (or ended) leave the
-- set. Every change to the counter is atomic with its job's, so the sum is exact. O(open jobs);
-- run when a sweep finds a job whose record vanished while open (EXPIRE_JOB -1).
-- KEYS: 1 backlog counter, 2 deadlines set. ARGV: 1 the job keys' prefix (keys.job(''))
-- Returns {the counter before, after, members dropped}

local before = tonumber(redis.call('GET', KEYS[1]) or '0')
local sum, dropped = 0, 0
for _, id in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  local job = redis.call('HMGET', ARGV[1] .. id, 'status', 'total', 'done')
  if job[1] == '${JobStatus.queued}' or job[1] == '${JobStatus.running}' then
    sum = sum + tonumber(job[2] or '0') - tonumber(job[3] or '0')
  else
    redis.call('ZREM', KEYS[2], id)
    dropped = dropped + 1
  end
end
redis.call('SET', KEYS[1], sum)
return {before, sum, dropped}
