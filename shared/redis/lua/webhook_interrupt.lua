-- The notifier that ran an attempt died; its rq job is queued again at once (in the same
-- transaction: workers/webhooks/orphans.py). KEYS: 1 delivery, 2 attempts. ARGV: 1 round, 2 now,
-- 3 ttl, 4 '1' when rq gives the job up (its crash retries are spent): the delivery is dead.
-- The attempt in flight, if any, is recorded as INTERRUPTED and the delivery is `pending` again
-- (its next attempt is due now), or `dead`. Returns 1 if an attempt was in flight, else 0 (the
-- notifier died before the attempt began, or after it was recorded: nothing to add).
--! include webhook_push_interrupted


if redis.call('HGET', KEYS[1], 'round') ~= ARGV[1] then return 0 end
local d = redis.call('HMGET', KEYS[1], 'state', 'started_at')
local cut = 0
if d[1] == 'delivering' and d[2] then
  push_interrupted(d[2])
  redis.call('HSET', KEYS[1], 'last_status', '', 'last_attempt_at', ARGV[2])
  redis.call('HSET', KEYS[1], 'last_error', ${WEBHOOK_INTERRUPTED})
  redis.call('HDEL', KEYS[1], 'started_at')
  cut = 1
end
if ARGV[4] == '1' and d[1] ~= 'succeeded' and d[1] ~= 'dead' then
  redis.call('HSET', KEYS[1], 'state', 'dead', 'next_attempt_at', '')
elseif cut == 1 then
  redis.call('HSET', KEYS[1], 'state', 'pending', 'next_attempt_at', ARGV[2])
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return cut
