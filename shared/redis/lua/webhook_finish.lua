-- An attempt ended. KEYS: 1 delivery, 2 attempts, 3 job's webhook index, 4 job hash, 5 job
-- outputs. ARGV: 1 round, 2 new state, 3 the attempt (JSON), 4 status ('' none), 5 error ('' none),
-- 6 next attempt at ('' none), 7 ttl, 8 now, 9 gone reason ('' none: else set on the job's index).
-- Metrics: optionally KEYS[6], keys.METRICS, and ARGV[10], the attempt's field there
-- (shared/metrics.py webhook_field), which gets 1 more (not for a stale round).
-- The job and its outputs live at least `ttl` more (an attempt is a change of the job: a retry
-- hours later still finds it). Returns 0 if stale.

if redis.call('HGET', KEYS[1], 'round') ~= ARGV[1] then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[3])
redis.call('LTRIM', KEYS[2], -${WEBHOOK_ATTEMPTS_KEPT}, -1)
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HINCRBY', KEYS[1], 'tries', 1)
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'last_status', ARGV[4], 'last_error', ARGV[5],
           'next_attempt_at', ARGV[6], 'last_attempt_at', ARGV[8])
redis.call('HDEL', KEYS[1], 'started_at')
if KEYS[6] then redis.call('HINCRBY', KEYS[6], ARGV[10], 1) end  -- metrics
redis.call('EXPIRE', KEYS[1], ARGV[7])
redis.call('EXPIRE', KEYS[2], ARGV[7])
if ARGV[9] ~= '' then
  redis.call('HSET', KEYS[3], 'gone', ARGV[9])
  redis.call('EXPIRE', KEYS[3], ARGV[7])
end
for k = 3, 5 do
  local left = redis.call('TTL', KEYS[k])
  if left >= 0 and left < tonumber(ARGV[7]) then redis.call('EXPIRE', KEYS[k], ARGV[7]) end
end
return 1
