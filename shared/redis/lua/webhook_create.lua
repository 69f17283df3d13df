-- KEYS: 1 delivery, 2 job's webhook index. ARGV: 1 id, 2 job id, 3 event type, 4 event at (ms),
-- 5 now (ms), 6 ttl s, 7 next attempt at (ms), 8 '1' for job.completed.
-- Returns {1, round} when created, {0, round} when it existed (an event handled twice).

if redis.call('EXISTS', KEYS[1]) == 1 then
  return {0, tonumber(redis.call('HGET', KEYS[1], 'round'))}
end
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'job', ARGV[2], 'event', ARGV[3], 'event_at', ARGV[4],
           'created_at', ARGV[5], 'round', 1, 'state', 'pending', 'attempts', 0, 'tries', 0,
           'next_attempt_at', ARGV[7])
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('HSET', KEYS[2], 'latest', ARGV[1])
if ARGV[8] == '1' then redis.call('HSET', KEYS[2], 'completed', ARGV[1]) end
redis.call('EXPIRE', KEYS[2], ARGV[6])
return {1, 1}
